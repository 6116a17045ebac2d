"""The actor's logged PPO metrics when a micro-batch holds no action token (rows out of the loss, a stub row)."""

from __future__ import annotations

import math

import pytest
import torch
from support.actor_trainer import actor_trainer, resolve_args, rows

from openrlhf_ext.trainer.actors import ExtActorPPOTrainer


def trainer(model_dir, *flags: str) -> ExtActorPPOTrainer:
    return actor_trainer(model_dir, resolve_args(*flags))


@pytest.mark.parametrize("flags", [("--advantage_estimator", "reinforce_rej"),
                                   ("--advantage_estimator", "raft"),
                                   ("--advantage_estimator", "reinforce_rej", "--use_kl_loss")])
def test_masked_micro_batch_logs_finite_metrics_that_do_not_change_the_step_mean(tmp_path, flags):
    ext = trainer(tmp_path / "model", *flags)
    filtered = rows([[0] * 5, [0] * 5], seed=1)  # a filtered group: no action token at all
    kept = rows([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], seed=2)
    info = {"dp_size": 1, "batch_num_tokens": 8.0, "global_batch_size": 2.0}
    statuses = [ext.training_step(filtered, 0.0, 0, info), ext.training_step(kept, 0.0, 1, info)]

    masked = statuses[0]["metrics"]
    for key in ("ppo_kl", "ppo_clip_ratio", *(("logprobs_diff",) if "--use_kl_loss" in flags else ())):
        assert math.isfinite(float(masked[key])), key
    # ppo_train's reduction: each micro-batch's token-weighted mean, weighted by its action tokens.
    for key in ("ppo_kl", "ppo_clip_ratio", "policy_loss"):
        weighted = sum(float(s["metrics"][key]) * s["num_action_tokens"] for s in statuses)
        mean = weighted / sum(s["num_action_tokens"] for s in statuses)
        assert math.isfinite(mean), key
        assert mean == pytest.approx(float(statuses[1]["metrics"][key]), abs=1e-6), key
    assert float(statuses[1]["metrics"]["ppo_kl"]) != 0  # the kept batch's value is a real, non-trivial one


def test_stock_loss_is_nan_on_a_masked_micro_batch(tmp_path):
    """Why the guard exists: stock OpenRLHF's masked means are 0/0 on such a micro-batch."""
    ext = trainer(tmp_path / "model", "--advantage_estimator", "reinforce_rej")
    batch = rows([[0] * 5], seed=3)
    log_probs = torch.full((1, 5), -4.0)
    _, clip_ratio, ppo_kl, *_ = ext.actor_loss_fn(log_probs, batch.action_log_probs, batch.advantages,
                                                 action_mask=batch.action_mask, dp_size=1, batch_num_tokens=1.0,
                                                 global_batch_size=1.0)
    assert math.isnan(float(ppo_kl)) and math.isnan(float(clip_ratio))
