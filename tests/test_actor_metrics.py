"""The actor's logged PPO metrics when filtered samples reach training as all-zero-mask rows."""

from __future__ import annotations

import math

import pytest
import torch
from openrlhf.models import Actor
from openrlhf.trainer.ppo_utils.experience import Experience
from openrlhf.trainer.ray import ppo_actor
from transformers import LlamaConfig, LlamaForCausalLM

from openrlhf_ext.cli.args import resolve_train_config
from openrlhf_ext.trainer.actors import ExtActorPPOTrainer

VOCAB = 64


class SingleProcessStrategy:
    """What ``training_step`` asks of OpenRLHF's DeepSpeed strategy, for one process without DeepSpeed."""

    ring_attn_group = None

    def __init__(self, args):
        self.args = args

    def backward(self, loss, model, optimizer):
        loss.backward()

    def optimizer_step(self, optimizer, model, scheduler, name):
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()

    def get_grad_norm(self, model):
        return 0.0


def trainer(monkeypatch, model_dir, *flags: str) -> ExtActorPPOTrainer:
    args = resolve_train_config(["--pretrain", "/m", "--prompt_data", "/d.jsonl", "--remote_rm_url", "/r.py",
                                 "--n_samples_per_prompt", "4", "--init_kl_coef", "0", *flags])
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=1, num_key_value_heads=1)).save_pretrained(model_dir)
    actor = Actor(str(model_dir), attn_implementation="sdpa")
    actor.model.float()  # loaded as OpenRLHF's bf16; fp32 keeps the compared means exact
    optimizer = torch.optim.SGD(actor.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    # The stock constructor ends with a cross-process barrier and a CUDA sync (nothing to wait for here),
    # and builds a CUDA replay buffer that training_step does not use given its loss normalisers.
    monkeypatch.setattr(ppo_actor, "torch_dist_barrier_and_cuda_sync", lambda: None)
    monkeypatch.setattr(ppo_actor, "NaiveReplayBuffer", lambda *args, **kwargs: None)
    return ExtActorPPOTrainer(SingleProcessStrategy(args), actor, None, optimizer, scheduler)


def micro_batch(action_masks: list[list[int]], seed: int) -> Experience:
    """Rows of 3 prompt tokens + 5 response positions; a filtered sample has an all-zero action mask."""
    gen = torch.Generator().manual_seed(seed)
    rows = len(action_masks)
    mask = torch.tensor(action_masks, dtype=torch.bool)
    return Experience(
        sequences=torch.randint(1, VOCAB, (rows, 8), generator=gen),
        attention_mask=torch.ones(rows, 8, dtype=torch.long),
        action_mask=mask,
        action_log_probs=torch.full((rows, 5), -4.0) + 0.1 * torch.randn(rows, 5, generator=gen),
        advantages=torch.randn(rows, 5, generator=gen) * mask,
        info={},
    )


@pytest.mark.parametrize("flags", [("--advantage_estimator", "reinforce_rej"),
                                   ("--advantage_estimator", "raft"),
                                   ("--advantage_estimator", "reinforce_rej", "--use_kl_loss")])
def test_masked_micro_batch_logs_finite_metrics_that_do_not_change_the_step_mean(monkeypatch, tmp_path, flags):
    ext = trainer(monkeypatch, tmp_path, *flags)
    filtered = micro_batch([[0] * 5, [0] * 5], seed=1)  # a filtered group: no action token at all
    kept = micro_batch([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], seed=2)
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


def test_stock_loss_is_nan_on_a_masked_micro_batch(monkeypatch, tmp_path):
    """Why the guard exists: stock OpenRLHF's masked means are 0/0 on such a micro-batch."""
    ext = trainer(monkeypatch, tmp_path, "--advantage_estimator", "reinforce_rej")
    batch = micro_batch([[0] * 5], seed=3)
    log_probs = torch.full((1, 5), -4.0)
    _, clip_ratio, ppo_kl, *_ = ext.actor_loss_fn(log_probs, batch.action_log_probs, batch.advantages,
                                                 action_mask=batch.action_mask, dp_size=1, batch_num_tokens=1.0,
                                                 global_batch_size=1.0)
    assert math.isnan(float(ppo_kl)) and math.isnan(float(clip_ratio))
