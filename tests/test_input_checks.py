"""Bad input stops before Ray starts, with one line naming the flag or file:line (exit 2)."""

from __future__ import annotations

import json

import pytest

from openrlhf_ext.cli.train_config import build_parser
from openrlhf_ext.cli.train_ppo_ray import main
from openrlhf_ext.job.checks import RANGES

BASE = ["--pretrain", "/models/m", "--prompt_data", "/data/p.jsonl", "--remote_rm_url", "/rm/reward.py",
        "--advantage_estimator", "reinforce"]


def one_line_error(capsys, *flags: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*BASE, *flags, "--print_config"])
    assert exit_info.value.code == 2
    return error_line(capsys)


def error_line(capsys) -> str:
    """The one error line on stderr, the last one (informational lines may precede it)."""
    lines = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in lines if ": error: " in line]
    assert errors == lines[-1:], lines
    return errors[0]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--actor_learning_rate=-1e-2"], "--actor.adam.lr: must be > 0, got -0.01"),
        (["--actor.adam.lr", "nan"], "--actor.adam.lr: must be a finite number"),
        (["--n_samples_per_prompt", "0"], "--rollout.n_samples_per_prompt: must be >= 1, got 0"),
        (["--train_batch_size", "0"], "--train.batch_size"),
        (["--micro_rollout_batch_size", "-4"], "--rollout.micro_batch_size"),
        (["--init_kl_coef", "-0.1"], "--algo.kl.init_coef: must be >= 0"),
        (["--top_p", "0"], "--rollout.top_p: must be > 0 and <= 1"),
        (["--temperature", "-1"], "--rollout.temperature"),
        (["--eps_clip_low_high", "0.2", "-0.28"], "--actor.eps_clip_low_high: must be >= 0, got [0.2, -0.28]"),
        (["--gamma", "1.5"], "--algo.advantage.gamma"),
        (["--save_steps", "0"], "--ckpt.save_steps: must be >= 1 (or -1), got 0"),
        (["--lr_warmup_ratio", "2"], "--actor.lr_warmup_ratio"),
        (["--reward_clip_range", "5", "-5"], "--reward.clip_range: LOW must be below HIGH"),
        (["--ext.format_reward_coef", "-1"], "--ext.format_reward_coef"),
        (["--dual_clip", "0.5"], "--actor.dual_clip: must be > 1"),
    ],
)
def test_numeric_flags_out_of_range_fail_naming_the_flag(capsys, flags, expected):
    assert expected in one_line_error(capsys, *flags)


def test_valid_edge_values_pass(capsys):
    main([*BASE, "--temperature", "0", "--init_kl_coef", "0", "--save_steps", "-1", "--top_p", "1",
          "--actor_learning_rate=1e-7", "--print_config"])
    config = json.loads(capsys.readouterr().out)
    assert config["actor"]["adam"]["lr"] == 1e-7 and config["rollout"]["temperature"] == 0


def test_every_range_names_a_real_flag():
    dests = {action.dest for action in build_parser()._actions}
    assert not set(RANGES) - dests


# ---------------------------------------------------------------------------------------------
# Model folders and prompt files, checked at launch before ray.init


def launch_error(capsys, model: str, prompts: str, out, *flags: str) -> str:
    """Run the real CLI up to launch; it must stop before Ray with one line and exit code 2."""
    import ray

    inits = []
    # Recorded, not asked of ray.is_initialized(): an earlier test of the session may hold a Ray.
    with pytest.MonkeyPatch.context() as patch, pytest.raises(SystemExit) as exit_info:
        patch.setattr(ray, "init", lambda *a, **k: inits.append((a, k)))
        main(["--pretrain", model, "--prompt_data", prompts, "--advantage_estimator", "reinforce",
              "--generate_max_len", "16", "--max_len", "64", "--save_path", str(out), *flags])
    assert exit_info.value.code == 2
    assert inits == []
    return error_line(capsys)


def write_lines(path, *lines: str) -> str:
    path.write_text("".join(line + "\n" for line in lines))
    return str(path)


def test_malformed_jsonl_without_template_names_file_and_line(capsys, tmp_path, tiny_model_dir):
    prompts = write_lines(tmp_path / "p.jsonl", '{"input": "1+1?"}', '{"input": "2+2?"', '{"input": "3"}')
    err = launch_error(capsys, tiny_model_dir, prompts, tmp_path / "out")
    assert f"--data.prompt_dataset: {prompts}:2: invalid JSON" in err


def test_missing_input_key_and_label_key_are_named(capsys, tmp_path, tiny_model_dir):
    prompts = write_lines(tmp_path / "p.jsonl", '{"input": "1+1?", "answer": "2"}', '{"question": "2+2?"}')
    err = launch_error(capsys, tiny_model_dir, prompts, tmp_path / "out")
    assert f"{prompts}:2: 'input' (--data.input_key) must be a non-empty string" in err
    prompts = write_lines(tmp_path / "q.jsonl", '{"input": "1+1?", "answer": "2"}', '{"input": "2+2?"}')
    err = launch_error(capsys, tiny_model_dir, prompts, tmp_path / "out", "--label_key", "answer")
    assert f"{prompts}:2: 'answer' (--data.label_key) is missing or null" in err


def test_missing_prompt_file_is_one_line(capsys, tmp_path, tiny_model_dir):
    err = launch_error(capsys, tiny_model_dir, str(tmp_path / "nope.jsonl"), tmp_path / "out")
    assert err.endswith(f"--data.prompt_dataset: {tmp_path / 'nope.jsonl'}: no such file")
    # The same loader reads the files of the template path, with the same one-line errors.
    err = launch_error(capsys, tiny_model_dir, str(tmp_path / "nope.jsonl"), tmp_path / "out",
                       "--ext.template", "r1")
    assert f"--data.prompt_dataset: {tmp_path / 'nope.jsonl'}: no such file" in err


def test_malformed_eval_file_is_named(capsys, tmp_path, tiny_model_dir):
    prompts = write_lines(tmp_path / "p.jsonl", '{"input": "1+1?"}')
    evals = write_lines(tmp_path / "e.jsonl", "[1, 2]")
    err = launch_error(capsys, tiny_model_dir, prompts, tmp_path / "out", "--eval_dataset", evals)
    assert f"--eval.dataset: {evals}:1: expected a JSON object, got list" in err


def test_missing_model_folder(capsys, tmp_path):
    prompts = write_lines(tmp_path / "p.jsonl", '{"input": "1+1?"}')
    err = launch_error(capsys, str(tmp_path / "no_model"), prompts, tmp_path / "out")
    assert err.endswith(f"--actor.model_name_or_path: {tmp_path / 'no_model'}: no such model folder")
    (tmp_path / "empty_model").mkdir()
    err = launch_error(capsys, str(tmp_path / "empty_model"), prompts, tmp_path / "out")
    assert "no config.json" in err


def test_prompt_over_the_budget_is_refused_not_truncated(capsys, tmp_path, tiny_model_dir):
    long_problem = "what is " + " plus ".join(str(i) for i in range(40)) + "?"
    prompts = write_lines(tmp_path / "p.jsonl", '{"input": "1+1?"}', json.dumps({"input": long_problem}))
    err = launch_error(capsys, tiny_model_dir, prompts, tmp_path / "out")
    assert f"--data.max_len: {prompts}:2: prompt of " in err
    assert "over the prompt budget of 48 (--data.max_len 64 - --rollout.max_new_tokens 16); 1 of 2" in err


def test_good_inputs_pass_and_keep_stock_prompt_semantics(tmp_path, tiny_model_dir):
    from openrlhf_ext.cli.train_config import resolve_train_config
    from openrlhf_ext.job.inputs import prepare_inputs

    prompts = write_lines(tmp_path / "p.jsonl", json.dumps({"q": [{"role": "user", "content": "1+1?"}], "a": 2}))
    args = resolve_train_config(["--pretrain", tiny_model_dir, "--prompt_data", prompts, "--input_key", "q",
                                 "--label_key", "a", "--apply_chat_template", "--advantage_estimator", "reinforce",
                                 "--generate_max_len", "16", "--max_len", "128", "--save_path", str(tmp_path / "o")])
    prepare_inputs(args)  # chat messages are a valid input with --apply_chat_template
    assert args.data.prompt_dataset == prompts


def truncated_copy(model_dir: str, dest) -> tuple[str, str]:
    """A copy of ``model_dir`` whose weights file lost its last kilobyte (an interrupted copy or download)."""
    import shutil

    shutil.copytree(model_dir, dest)
    weights = dest / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-1024])
    return str(dest), str(weights)


def test_truncated_weights_are_named_before_training(capsys, tmp_path, tiny_model_dir):
    model, weights = truncated_copy(tiny_model_dir, tmp_path / "model")
    prompts = write_lines(tmp_path / "p.jsonl", '{"input": "1+1?"}')
    err = launch_error(capsys, model, prompts, tmp_path / "out")
    assert f"--actor.model_name_or_path: {weights}: truncated safetensors file (" in err


def test_evaluator_names_a_truncated_weights_file(capsys, tmp_path, tiny_model_dir):
    from openrlhf_ext.cli.evaluate import run

    model, weights = truncated_copy(tiny_model_dir, tmp_path / "model")
    data = write_lines(tmp_path / "bench.jsonl", '{"problem": "1+1?", "answer": "2"}')
    with pytest.raises(SystemExit) as exit_info:
        run(["--pretrain", model, "--eval_data", data, "--output_dir", str(tmp_path / "eval")])
    assert exit_info.value.code == 2
    assert f"--pretrain: {weights}: truncated safetensors file (" in capsys.readouterr().err


@pytest.mark.parametrize(("flags", "expected"), [
    (["--actor.policy_loss_type", "vanilla", "--algo.advantage.is_correction_level", "token"],
     "--algo.advantage.is_correction_level token: the vLLM importance-sampling correction runs only with "
     "OpenRLHF's own losses (--actor.policy_loss_type ppo/gspo with --actor.loss_agg_mode "
     "token-mean/seq-mean-token-mean); got vanilla with token-mean"),
    (["--enable_vllm_is_correction", "--loss_agg_mode", "seq-mean-token-sum"], "got ppo with seq-mean-token-sum"),
    (["--advantage_estimator", "dr_grpo", "--algo.advantage.is_correction_level", "seq"],
     "got ppo with seq-mean-token-sum-norm"),  # the preset's aggregation
    (["--actor.policy_loss_type", "gspo", "--actor.loss_agg_mode", "seq-mean-token-sum"],
     "--actor.loss_agg_mode seq-mean-token-sum: GSPO is sequence-level; use seq-mean-token-mean"),
])
def test_losses_that_cannot_train_together_are_refused_before_ray(capsys, flags, expected):
    """The policy actor refused these only after its models loaded."""
    assert expected in one_line_error(capsys, *flags)


def test_the_demo_correction_yields_to_a_preset_loss_it_cannot_run():
    """The embedded demo turns the vLLM correction on; RAFT's vanilla loss has none (it failed in the actor)."""
    from openrlhf_ext.cli.train_config import resolve_train_config

    raft = resolve_train_config(["--advantage_estimator", "raft"])
    assert raft.actor.policy_loss_type == "vanilla" and raft.algo.advantage.is_correction_level == "off"
    assert resolve_train_config(["--advantage_estimator", "reinforce_rej"]).algo.advantage.is_correction_level == "token"


def test_files_for_the_actors_are_absolute_under_the_output_dir(monkeypatch, tmp_path, tiny_model_dir):
    """A relative --save_path: the templated prompt files are named by absolute paths, for an actor on
    another node (a shared filesystem) or with another working directory."""
    from openrlhf_ext.cli.train_config import resolve_train_config
    from openrlhf_ext.job.inputs import prepare_inputs

    monkeypatch.chdir(tmp_path)
    problems = json.dumps({"problem": "1+1?", "answer": "2"})
    write_lines(tmp_path / "p.jsonl", problems)
    write_lines(tmp_path / "e.jsonl", problems)
    args = resolve_train_config(["--pretrain", tiny_model_dir, "--prompt_data", "p.jsonl", "--eval_dataset", "e.jsonl",
                                 "--ext.template", "qwen_math", "--advantage_estimator", "reinforce",
                                 "--save_path", "runs/x"])
    prepare_inputs(args)
    assert args.data.prompt_dataset == str(tmp_path / "runs" / "x" / "prompts.jsonl")
    assert args.eval.dataset == str(tmp_path / "runs" / "x" / "eval_prompts.jsonl")
