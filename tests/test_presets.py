"""Paper-faithful presets: each new estimator resolves to its authors' released configuration, stock
names keep stock defaults, explicit flags win, and --print_config says where each value came from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from openrlhf_ext.algorithms.config import PRESETS, STOCK_ESTIMATORS, preset_settings_markdown
from openrlhf_ext.cli.stock_main import stock_parser
from openrlhf_ext.cli.train_ppo_ray import main

# No embedded default (model conversion, data generation, CPU dtype choice) kicks in with these.
BASE = ["--pretrain", "/models/m", "--prompt_data", "/data/p.jsonl", "--remote_rm_url", "/rm/reward.py",
        "--n_samples_per_prompt", "4", "--ds.param_dtype", "bf16"]

# The authors' released settings, written down from their files (not read from PRESETS):
# RLHFlow/Minimal-RL scripts/run_raftpp.sh + run_reinforce_rej.sh (use_kl_loss=True, kl_loss_coef=0.001,
# kl_loss_type=low_var_kl, policy_loss=plusplus) and verl/trainer/config/ppo_trainer.yaml
# (clip_ratio 0.2, clip_ratio_c 3.0, loss_agg_mode token-mean, entropy_coeff 0.001); rewards in {-1, 1}
# (arXiv:2504.11343 Sec. 2); filtered rows kept with A = 0 (verl/trainer/ppo/core_algos.py).
MINIMAL_RL_PLUSPLUS = {
    "algo.kl.use_loss": True, "algo.kl.estimator": "k3", "algo.kl.init_coef": 0.001, "ext.signed_reward": True,
    "actor.loss_agg_mode": "token-mean", "actor.policy_loss_type": "ppo", "actor.eps_clip_low_high": [0.2, 0.2],
    "actor.dual_clip": 3.0, "actor.entropy_coef": 0.001, "ext.dropped_rows": "zero_advantage",
}
# run_raft.sh: policy_loss=vanilla (-A log pi: no ratio, so no clip and no dual clip).
MINIMAL_RL_RAFT = {**MINIMAL_RL_PLUSPLUS, "actor.policy_loss_type": "vanilla", "actor.dual_clip": None}
# alibaba/ROLL LitePPO.md (use_kl_loss, kl_loss_coef 0.001, pg_clip 0.2, dual_clip_loss), actor_worker.py
# (k3 KL loss, dual-clip bound 1 + 2 pg_clip), base_config.py (entropy_loss_coef 0), math reward 1 / 0.
ROLL_LITE_PPO = {
    "algo.kl.use_loss": True, "algo.kl.estimator": "k3", "algo.kl.init_coef": 0.001, "ext.signed_reward": False,
    "actor.loss_agg_mode": "token-mean", "actor.policy_loss_type": "ppo", "actor.eps_clip_low_high": [0.2, 0.2],
    "actor.dual_clip": 1.4, "actor.entropy_coef": 0.0, "ext.dropped_rows": "exclude", "ext.overlong_filter": False,
}
EXPECTED = {
    "reinforce_raw": MINIMAL_RL_PLUSPLUS,
    "raft": MINIMAL_RL_RAFT,
    "raft_pp": MINIMAL_RL_PLUSPLUS,
    "reinforce_rej": MINIMAL_RL_PLUSPLUS,
    "reinforce_rej_wrong": MINIMAL_RL_PLUSPLUS,
    "reinforce_rej_correct": MINIMAL_RL_PLUSPLUS,
    "reinforce_mean_zero": MINIMAL_RL_PLUSPLUS,
    "reinforce_rej_std": MINIMAL_RL_PLUSPLUS,
    "lite_ppo": ROLL_LITE_PPO,
}
# Where each family's values must be cited from.
CITED = {"lite_ppo": ("alibaba/ROLL", "arXiv:2508.08221")}
MINIMALIST_CITED = ("RLHFlow/Minimal-RL", "arXiv:2504.11343")


def resolved(capsys, *flags: str) -> dict:
    main([*BASE, *flags, "--print_config"])
    return json.loads(capsys.readouterr().out)


def value(config: dict, dest: str):
    for key in dest.split("."):
        config = config[key]
    return config


def stderr_lines(capsys) -> list[str]:
    """Our lines on stderr (the CPU platform layer's sizing notes are not about these flags)."""
    return [line for line in capsys.readouterr().err.splitlines() if not line.startswith("[openrlhf_ext.cpu]")]


def one_line_error(capsys, *flags: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*BASE, *flags, "--print_config"])
    assert exit_info.value.code == 2
    err = stderr_lines(capsys)
    assert len(err) == 1, err
    return err[0]


def test_every_new_preset_is_checked_here():
    assert set(EXPECTED) == set(PRESETS) - set(STOCK_ESTIMATORS)


@pytest.mark.parametrize("estimator", sorted(EXPECTED))
def test_new_preset_resolves_to_its_authors_configuration(capsys, estimator):
    config = resolved(capsys, "--advantage_estimator", estimator)
    for dest, expected in EXPECTED[estimator].items():
        assert value(config, dest) == expected, dest
        if dest in PRESETS[estimator].settings:
            assert config["provenance"][dest] == "preset", dest
            source = PRESETS[estimator].settings[dest].source
            assert any(ref in source for ref in CITED.get(estimator, MINIMALIST_CITED)), (dest, source)


@pytest.mark.parametrize("estimator", [e for e in STOCK_ESTIMATORS if e != "gae"])
def test_stock_names_keep_stock_defaults(capsys, estimator):
    stock = stock_parser().parse_args([])
    config = resolved(capsys, "--advantage_estimator", estimator)
    for dest in ("algo.kl.use_loss", "algo.kl.estimator", "algo.kl.init_coef", "actor.dual_clip",
                 "actor.entropy_coef", "actor.eps_clip", "actor.policy_loss_type"):
        assert value(config, dest) == getattr(stock, dest), dest
        assert config["provenance"][dest] == "stock", dest
    agg = "seq-mean-token-sum-norm" if estimator == "dr_grpo" else stock.__dict__["actor.loss_agg_mode"]
    assert config["actor"]["loss_agg_mode"] == agg  # dr_grpo: the documented deliberate difference
    ext = config["ext"]
    assert (ext["signed_reward"], ext["dropped_rows"], ext["overlong_filter"]) == (False, "exclude", False)


def test_explicit_flags_win_and_provenance_names_the_origin(capsys):
    config = resolved(capsys, "--advantage_estimator", "reinforce_rej", "--init_kl_coef", "0.05",
                      "--actor.dual_clip", "5", "--ext.dropped_rows", "exclude", "--actor.entropy_coef", "0")
    assert config["algo"]["kl"]["init_coef"] == 0.05 and config["actor"]["dual_clip"] == 5.0
    assert config["ext"]["dropped_rows"] == "exclude" and config["actor"]["entropy_coef"] == 0.0
    origin = config["provenance"]
    assert origin["algo.kl.init_coef"] == origin["actor.dual_clip"] == origin["ext.dropped_rows"] == "user"
    assert origin["algo.kl.estimator"] == origin["ext.filter"] == "preset"
    assert origin["actor.adam.lr"] == origin["algo.kl.horizon"] == "stock"


@pytest.mark.parametrize(("alias", "name"), [("grpo", "group_norm"), ("reinforce_plus_plus", "reinforce"),
                                             ("reinforce_plus_plus_baseline", "reinforce_baseline")])
def test_aliases_run_as_their_canonical_estimator(capsys, alias, name):
    assert resolved(capsys, "--advantage_estimator", alias) == resolved(capsys, "--advantage_estimator", name)


def test_signed_reward_accepts_on_off_and_the_bare_flag(capsys):
    assert resolved(capsys, "--advantage_estimator", "group_norm", "--ext.signed_reward")["ext"]["signed_reward"]
    assert resolved(capsys, "--advantage_estimator", "group_norm", "--ext.signed_reward", "on")["ext"]["signed_reward"]
    config = resolved(capsys, "--advantage_estimator", "reinforce_rej", "--ext.signed_reward=off")
    assert config["ext"]["signed_reward"] is False


def test_signed_reward_off_against_the_preset_is_honoured_with_one_warning_line(capsys):
    main([*BASE, "--advantage_estimator", "reinforce_rej", "--ext.signed_reward", "off", "--print_config"])
    captured = capsys.readouterr()
    assert json.loads(captured.out)["ext"]["signed_reward"] is False
    warning = [line for line in captured.err.splitlines() if not line.startswith("[openrlhf_ext.cpu]")]
    assert len(warning) == 1 and "--ext.signed_reward off" in warning[0] and "no gradient" in warning[0]
    # RAFT keeps only correct answers: {0,1} changes nothing but the logged reward, and says so.
    main([*BASE, "--advantage_estimator", "raft", "--ext.signed_reward", "off", "--print_config"])
    warning = stderr_lines(capsys)
    assert len(warning) == 1 and "only the logged reward" in warning[0]
    # A preset that does not ask for signed rewards warns nothing.
    main([*BASE, "--advantage_estimator", "lite_ppo", "--print_config"])
    assert stderr_lines(capsys) == []


@pytest.mark.parametrize(
    ("flags", "flag"),
    [
        (["--ext.dropped_rows", "drop"], "--ext.dropped_rows"),
        (["--ext.overlong_filter", "yes"], "--ext.overlong_filter"),
        (["--ext.signed_reward", "1"], "--ext.signed_reward"),
        (["--ext.reward_fallback", "maybe"], "--ext.reward_fallback"),
        (["--ext.strict_format", "true"], "--ext.strict_format"),
        (["--ext.filter", "zero"], "--ext.filter"),
        (["--ext.template", "minimal"], "--ext.template"),
        (["--ext.strict_format", "on", "--ext.reward_fallback", "on"], "--ext.reward_fallback"),
    ],
)
def test_bad_values_of_the_new_flags_name_the_flag_in_one_line(capsys, flags, flag):
    assert flag in one_line_error(capsys, "--advantage_estimator", "reinforce_rej", *flags)


def test_reward_flags_resolve(capsys):
    ext = resolved(capsys, "--advantage_estimator", "dr_grpo")["ext"]
    assert (ext["reward_fallback"], ext["strict_format"]) == (True, False)  # documented dr_grpo default
    ext = resolved(capsys, "--advantage_estimator", "dr_grpo", "--ext.strict_format", "on",
                   "--ext.template", "minimalist")["ext"]
    assert (ext["strict_format"], ext["template"]) == (True, "minimalist")


def test_preset_settings_table_in_the_docs_is_up_to_date():
    doc = Path(__file__).resolve().parents[1] / "docs" / "algorithms.md"
    assert preset_settings_markdown() in doc.read_text(), (
        "paste openrlhf_ext.algorithms.config.preset_settings_markdown() into docs/algorithms.md §2.1"
    )
