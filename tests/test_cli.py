"""The train_ppo_ray CLI: a strict superset of OpenRLHF 0.11.2's, checked through --print_config."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from openrlhf_ext.cli.train_ppo_ray import main

# Flags every test passes so that no embedded default (model conversion, data generation) kicks in.
BASE = ["--pretrain", "/models/m", "--prompt_data", "/data/p.jsonl", "--remote_rm_url", "/rm/reward.py"]


def resolved(capsys, *flags: str) -> dict:
    main([*BASE, *flags, "--print_config"])
    return json.loads(capsys.readouterr().out)


def error_of(capsys, *flags: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*BASE, *flags, "--print_config"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_issue_example_reinforce_rej(capsys):
    config = resolved(capsys, "--advantage_estimator", "reinforce_rej", "--n_samples_per_prompt", "4")
    assert config["algo"]["advantage"]["estimator"] == "reinforce_rej"
    assert config["ext"]["filter"] == "both"
    assert config["ext"]["baseline"] == "none" and config["ext"]["std_scale"] == "none"
    assert config["ext"]["positive_only"] is False
    assert config["rollout"]["n_samples_per_prompt"] == 4
    assert config["actor"]["policy_loss_type"] == "ppo"


def test_stock_defaults_are_unchanged(capsys):
    config = resolved(capsys, "--algo.advantage.estimator", "group_norm", "--rollout.n_samples_per_prompt", "8")
    # A sample of OpenRLHF 0.11.2 defaults.
    assert config["actor"]["eps_clip_low_high"] == [0.2, 0.2]
    assert config["actor"]["adam"]["lr"] == 1e-6
    assert config["algo"]["kl"]["init_coef"] == 0.01
    assert config["algo"]["kl"]["estimator"] == "k1"
    assert config["actor"]["loss_agg_mode"] == "token-mean"
    assert config["train"]["batch_size"] == 128
    assert config["rollout"]["batch_size"] == 1024
    assert config["ds"]["zero_stage"] == 2
    # stock normalisations ran: remote_url split into a list, vllm batch size filled in, no critic.
    assert config["reward"]["remote_url"] == ["/rm/reward.py"]
    assert config["rollout"]["vllm_generate_batch_size"] == 1024
    assert config["critic"]["model_name_or_path"] is None
    assert config["ext"]["baseline"] == "group_mean" and config["ext"]["std_scale"] == "group"


@pytest.mark.parametrize(
    ("estimator", "switches", "loss", "agg"),
    [
        ("raft", {"positive_only": True, "filter": "none"}, "vanilla", "token-mean"),
        ("raft_pp", {"positive_only": True}, "ppo", "token-mean"),
        ("reinforce_raw", {"filter": "none", "baseline": "none"}, "ppo", "token-mean"),
        ("reinforce_rej_wrong", {"filter": "all_wrong"}, "ppo", "token-mean"),
        ("reinforce_rej_correct", {"filter": "all_correct"}, "ppo", "token-mean"),
        ("reinforce_mean_zero", {"baseline": "group_mean", "std_scale": "none"}, "ppo", "token-mean"),
        ("reinforce_rej_std", {"filter": "both", "std_scale": "group"}, "ppo", "token-mean"),
        ("dr_grpo", {"baseline": "group_mean", "std_scale": "none"}, "ppo", "seq-mean-token-sum-norm"),
        ("lite_ppo", {"baseline": "group_mean", "std_scale": "batch", "stats": "sample"}, "ppo", "token-mean"),
        ("reinforce", {"std_scale": "whiten", "stats": "token"}, "ppo", "token-mean"),
        ("reinforce_baseline", {"baseline": "group_mean", "std_scale": "whiten"}, "ppo", "token-mean"),
        ("rloo", {"baseline": "group_loo"}, "ppo", "token-mean"),
    ],
)
def test_presets_expand_into_grid_switches(capsys, estimator, switches, loss, agg):
    config = resolved(capsys, "--algo.advantage.estimator", estimator, "--rollout.n_samples_per_prompt", "4",
                      "--rollout.max_new_tokens", "512")
    for key, value in switches.items():
        assert config["ext"][key] == value, key
    assert config["actor"]["policy_loss_type"] == loss
    assert config["actor"]["loss_agg_mode"] == agg


def test_dr_grpo_normaliser_defaults_to_generation_budget(capsys):
    config = resolved(capsys, "--advantage_estimator", "dr_grpo", "--n_samples_per_prompt", "4",
                      "--generate_max_len", "3000")
    assert config["ext"]["loss_norm_tokens"] == 3000
    config = resolved(capsys, "--advantage_estimator", "dr_grpo", "--n_samples_per_prompt", "4",
                      "--generate_max_len", "3000", "--ext.loss_norm_tokens", "4096")
    assert config["ext"]["loss_norm_tokens"] == 4096


def test_single_switch_overrides_preset_and_explicit_loss_wins(capsys):
    config = resolved(capsys, "--advantage_estimator", "reinforce_rej", "--n_samples_per_prompt", "4",
                      "--ext.filter", "all_wrong", "--ext.std_scale", "group")
    assert (config["ext"]["filter"], config["ext"]["std_scale"]) == ("all_wrong", "group")
    config = resolved(capsys, "--advantage_estimator", "raft", "--n_samples_per_prompt", "4",
                      "--actor.policy_loss_type", "ppo", "--loss_agg_mode", "seq-mean-token-sum")
    assert config["actor"]["policy_loss_type"] == "ppo"
    assert config["actor"]["loss_agg_mode"] == "seq-mean-token-sum"


@pytest.mark.parametrize(
    ("flags", "flag_named"),
    [
        (["--advantage_estimator", "reinforce_rej"], "--rollout.n_samples_per_prompt"),
        (["--advantage_estimator", "group_norm", "--n_samples_per_prompt", "1"], "n_samples_per_prompt"),
        (["--loss_agg_mode", "seq-mean"], "--loss_agg_mode"),
        (["--actor.loss_agg_mode", "sum"], "--actor.loss_agg_mode"),
        (["--advantage_estimator", "nope"], "--advantage_estimator"),
        (["--advantage_estimator", "gae", "--ext.baseline", "group_mean"], "--ext.baseline"),
        (["--advantage_estimator", "group_norm", "--n_samples_per_prompt", "4", "--ext.positive_only", "on"],
         "--ext.positive_only"),
        (["--prompt_max_len", "512"], "--prompt_max_len"),
        (["--ext.reward_timeout", "0"], "--ext.reward_timeout"),
        (["--advantage_estimator", "reinforce_rej", "--n_samples_per_prompt", "4", "--train.async_enable"],
         "--train.async_enable"),
    ],
)
def test_invalid_combinations_fail_with_one_line_naming_the_flag(capsys, flags, flag_named):
    assert flag_named in error_of(capsys, *flags)


def test_stock_assertions_become_one_line_errors(capsys):
    # OpenRLHF's own check (a bare assert in its __main__ block) still runs, as a clean error.
    err = error_of(capsys, "--algo.advantage.estimator", "group_norm", "--n_samples_per_prompt", "4",
                   "--train.partial_rollout_enable")
    assert "partial_rollout_enable requires --train.async_enable" in err


# OpenRLHF's own validation would meet these with a traceback (a TypeError comparing the default
# --vllm.num_engines None with 0; modelscope's ImportError): refused before it (cli/stock_validation.py).
STOCK_VALIDATION_CRASHES = [
    (["--ds.packing_samples"], "--ds.packing_samples: needs vLLM engines (--vllm.num_engines N)"),
    (["--ds.packing_samples", "--vllm.num_engines", "0"], "--ds.packing_samples: needs vLLM engines"),
    (["--train.dynamic_batch_enable"], "--train.dynamic_batch_enable: packs samples and needs vLLM engines"),
    (["--ds.ring_attn_size", "2"], "--ds.ring_attn_size: packs samples and needs vLLM engines"),
    (["--use_ms"], "--use_ms: needs the modelscope package"),
]


@pytest.mark.parametrize(("flags", "message"), STOCK_VALIDATION_CRASHES, ids=[" ".join(f) for f, _ in STOCK_VALIDATION_CRASHES])
def test_what_stock_validation_would_crash_on_is_refused_in_one_line(capsys, monkeypatch, flags, message):
    monkeypatch.setenv("OPENRLHF_EXT_PLATFORM", "cuda")  # the CPU platform gives packing an engine of its own
    monkeypatch.setitem(sys.modules, "modelscope", None)  # not installed, whatever this machine holds
    assert f"error: {message}" in error_of(capsys, *flags)


def test_no_model_or_data_flags_select_the_embedded_defaults(capsys):
    main(["--advantage_estimator", "reinforce_rej", "--n_samples_per_prompt", "4", "--print_config"])
    config = json.loads(capsys.readouterr().out)
    assert config["actor"]["model_name_or_path"].startswith("embedded:")
    assert config["data"]["prompt_dataset"].startswith("embedded:")
    assert config["reward"]["remote_url"][0].endswith("openrlhf_ext/rewards/math_reward_func.py")


def test_module_entry_point_prints_config_without_starting_ray():
    out = subprocess.run(
        [sys.executable, "-m", "openrlhf_ext.cli.train_ppo_ray", *BASE, "--advantage_estimator", "lite_ppo",
         "--n_samples_per_prompt", "4", "--print_config"],
        capture_output=True, text=True, timeout=120, check=True,
    )
    config = json.loads(out.stdout)
    assert config["ext"]["std_scale"] == "batch"
    assert "ray" not in out.stderr.lower() or "started" not in out.stderr.lower()


def test_flag_table_doc_is_up_to_date():
    from pathlib import Path

    from openrlhf_ext.cli.flag_table import render

    doc = Path(__file__).resolve().parents[1] / "docs" / "flags.md"
    assert doc.read_text() == render(), "regenerate: python -m openrlhf_ext.cli.flag_table > docs/flags.md"


def test_embedded_profile_fills_only_what_the_user_did_not_set(capsys):
    main(["--advantage_estimator", "reinforce_rej", "--rollout_batch_size", "16", "--print_config"])
    config = json.loads(capsys.readouterr().out)
    assert config["rollout"]["n_samples_per_prompt"] == 4  # profile: a group-based mode works out of the box
    assert config["rollout"]["batch_size"] == 16  # explicit flag wins over the profile
    assert config["ds"]["zero_stage"] == 3 and config["vllm"]["num_engines"] == 1
    assert config["ext"]["signed_reward"] is True  # reinforce_rej has no baseline: 0/1 would not teach wrong answers
    main(["--advantage_estimator", "group_norm", "--print_config"])
    assert json.loads(capsys.readouterr().out)["ext"]["signed_reward"] is False
    # With a model of the user's, stock defaults stay.
    config = resolved(capsys, "--advantage_estimator", "reinforce_rej", "--n_samples_per_prompt", "2")
    assert config["rollout"]["batch_size"] == 1024 and config["ds"]["zero_stage"] == 2
