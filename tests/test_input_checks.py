"""Bad input stops before Ray starts, with one line naming the flag or file:line (exit 2)."""

from __future__ import annotations

import json

import pytest

from openrlhf_ext.cli.args import build_parser
from openrlhf_ext.cli.checks import RANGES
from openrlhf_ext.cli.train_ppo_ray import main

BASE = ["--pretrain", "/models/m", "--prompt_data", "/data/p.jsonl", "--remote_rm_url", "/rm/reward.py",
        "--advantage_estimator", "reinforce"]


def one_line_error(capsys, *flags: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*BASE, *flags, "--print_config"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


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
