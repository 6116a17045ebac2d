"""Policy losses (vanilla, PPO clip-higher, dual clip) and global loss aggregation (docs/algorithms.md §5)."""

from __future__ import annotations

import math

import pytest
import torch

from openrlhf_ext.algorithms import LOSS_AGG_MODES, aggregate_loss, policy_loss


def _logp(values):
    return torch.log(torch.tensor(values, dtype=torch.float64))


def test_ppo_clip_higher_hand_values():
    # ratios 1.5, 0.5, 1.1, 0.7 with advantages +1, -1, +1, +1 and eps (0.2, 0.28):
    #  1.5 * +1 -> clipped to 1.28 -> loss -1.28 (clipped)
    #  0.5 * -1 -> min(-0.5, -0.8) = -0.8 -> loss 0.8 (clipped)
    #  1.1 * +1 -> inside the band -> loss -1.1
    #  0.7 * +1 -> min(0.7, 0.8) = 0.7 -> loss -0.7 (not clipped: the unclipped term is smaller)
    old = _logp([1.0, 1.0, 1.0, 1.0]).view(1, 4)
    new = _logp([1.5, 0.5, 1.1, 0.7]).view(1, 4)
    adv = torch.tensor([[1.0, -1.0, 1.0, 1.0]], dtype=torch.float64)
    mask = torch.ones(1, 4, dtype=torch.bool)
    out = policy_loss(new, old, adv, mask, eps_low=0.2, eps_high=0.28)
    torch.testing.assert_close(out.loss, torch.tensor([[-1.28, 0.8, -1.1, -0.7]], dtype=torch.float64))
    assert out.clip_fraction.item() == pytest.approx(0.5)
    # the clip fraction counts action tokens only
    out = policy_loss(new, old, adv, torch.tensor([[1, 0, 1, 1]], dtype=torch.bool), eps_low=0.2, eps_high=0.28)
    assert out.clip_fraction.item() == pytest.approx(1 / 3)


def test_dual_clip():
    # ratio 5 with A = -1: PPO gives min(-5, -1.2) = -5; dual clip c = 3 floors it at -3 -> loss 3.
    # ratio 2 with A = -1: min(-2, -1.2) = -2 > -3 -> unchanged, loss 2.
    # ratio 5 with A = +1: dual clip does not touch positive advantages -> loss -1.2.
    old = _logp([1.0, 1.0, 1.0]).view(1, 3)
    new = _logp([5.0, 2.0, 5.0]).view(1, 3)
    adv = torch.tensor([[-1.0, -1.0, 1.0]], dtype=torch.float64)
    mask = torch.ones(1, 3, dtype=torch.bool)
    out = policy_loss(new, old, adv, mask, dual_clip=3.0)
    torch.testing.assert_close(out.loss, torch.tensor([[3.0, 2.0, -1.2]], dtype=torch.float64))
    # token 0: dual clip active; token 1: ratio 2 is outside the band but the unclipped term is
    # the minimum (A < 0), so it is not clipped; token 2: ratio clip active
    assert out.clip_fraction.item() == pytest.approx(2 / 3)


def test_ppo_gradient_zero_where_clipped():
    old = _logp([1.0, 1.0]).view(1, 2)
    new = _logp([1.5, 1.1]).view(1, 2).requires_grad_()
    adv = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    policy_loss(new, old, adv, torch.ones(1, 2, dtype=torch.bool)).loss.sum().backward()
    # d(-ratio)/d(log pi) = -ratio on the unclipped token, 0 on the clipped one
    torch.testing.assert_close(new.grad, torch.tensor([[0.0, -1.1]], dtype=torch.float64))


def test_vanilla_loss_and_gradient():
    logp = torch.tensor([[-0.5, -2.0]], requires_grad=True)
    adv = torch.tensor([[1.0, 0.5]])
    out = policy_loss(logp, torch.zeros(1, 2), adv, torch.ones(1, 2, dtype=torch.bool), loss_type="vanilla")
    torch.testing.assert_close(out.loss, torch.tensor([[0.5, 1.0]]))
    assert out.clip_fraction.item() == 0.0
    out.loss.sum().backward()
    assert logp.grad.tolist() == [[-1.0, -0.5]]


def test_policy_loss_bad_arguments():
    x = torch.zeros(1, 2)
    mask = torch.ones(1, 2, dtype=torch.bool)
    with pytest.raises(ValueError, match="ppo, vanilla"):
        policy_loss(x, x, x, mask, loss_type="gspo")
    with pytest.raises(ValueError, match="dual_clip"):
        policy_loss(x, x, x, mask, dual_clip=0.5)
    with pytest.raises(ValueError, match="eps_low"):
        policy_loss(x, x, x, mask, eps_low=1.5)


# Loss table for aggregation: 3 sequences with 2, 1 and 0 action tokens.
LOSS = torch.tensor([[1.0, 3.0, 100.0], [4.0, 100.0, 100.0], [100.0, 100.0, 100.0]])
MASK = torch.tensor([[1, 1, 0], [1, 0, 0], [0, 0, 0]], dtype=torch.bool)


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("token-mean", (1 + 3 + 4) / 3),  # 3 tokens
        ("seq-mean-token-mean", (2 + 4) / 2),  # sequence means 2 and 4; the empty one does not count
        ("seq-mean-token-sum", (4 + 4) / 2),  # sequence sums 4 and 4
        ("seq-mean-token-sum-norm", 8 / (2 * 10)),  # 8 / (2 sequences * MAX_TOKENS = 10)
    ],
)
def test_aggregation_modes_hand_values(mode, expected):
    assert aggregate_loss(LOSS, MASK, mode, max_tokens=10).item() == pytest.approx(expected)


def test_aggregation_global_normalisers():
    # with global normalisers: partial sum / normaliser * dp_size
    assert aggregate_loss(LOSS, MASK, "token-mean", dp_size=2, batch_num_tokens=16.0).item() == pytest.approx(1.0)
    out = aggregate_loss(LOSS, MASK, "seq-mean-token-sum-norm", dp_size=4, global_batch_size=8.0, max_tokens=2)
    assert out.item() == pytest.approx(8 / 2 / 8 * 4)


def test_aggregation_errors():
    with pytest.raises(
        ValueError, match="token-mean, seq-mean-token-mean, seq-mean-token-sum, seq-mean-token-sum-norm"
    ):
        aggregate_loss(LOSS, MASK, "sum")
    with pytest.raises(ValueError, match="max_tokens"):
        aggregate_loss(LOSS, MASK, "seq-mean-token-sum-norm")
    with pytest.raises(ValueError, match="shape"):
        aggregate_loss(LOSS, MASK[:, :2], "token-mean")


def test_aggregation_of_empty_micro_batch_is_zero():
    out = aggregate_loss(LOSS, torch.zeros_like(MASK), "seq-mean-token-mean")
    assert out.item() == 0.0 and math.isfinite(out.item())


def _global_normalisers(masks: list[torch.Tensor], gas: int) -> dict[str, float]:
    """What OpenRLHF's loss_utils computes for one optimizer step: totals over all micro-batches
    of all ranks, divided by gas."""
    tokens = sum(float(m.sum()) for m in masks)
    seqs = sum(float((m.sum(-1) > 0).sum()) for m in masks)
    return {"batch_num_tokens": tokens / gas, "global_batch_size": seqs / gas}


@pytest.mark.parametrize("mode", LOSS_AGG_MODES)
def test_sharded_batch_equals_one_big_batch(mode):
    """2 DP ranks x 2 accumulation steps reproduce the loss and gradient of the whole batch.

    Simulated as OpenRLHF's loss_utils docstring describes it: each rank's micro-batch loss uses
    the step's global normalisers and is multiplied by dp_size; DeepSpeed scales every backward
    by 1/gas and sums the gas micro-batches; DP then averages the ranks' gradients.
    """
    gen = torch.Generator().manual_seed(0)
    num_seqs, length, dp_size, gas = 8, 7, 2, 2
    lengths = torch.tensor([7, 1, 3, 0, 5, 2, 6, 4])  # one empty sequence
    mask = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)
    adv = torch.randn(num_seqs, length, generator=gen, dtype=torch.float64)
    old = torch.randn(num_seqs, length, generator=gen, dtype=torch.float64) * 0.1 - 1.0
    params = (old + 0.3 * torch.randn(num_seqs, length, generator=gen, dtype=torch.float64)).requires_grad_()

    def token_loss(logp, a, o, m):
        return policy_loss(logp, o, a, m, eps_low=0.2, eps_high=0.28).loss

    full = aggregate_loss(token_loss(params, adv, old, mask), mask, mode, max_tokens=length)
    (full_grad,) = torch.autograd.grad(full, params)

    # unequal micro-batch sizes: rank 0 gets [0:3], [3:4]; rank 1 gets [4:6], [6:8]
    shards = [[slice(0, 3), slice(3, 4)], [slice(4, 6), slice(6, 8)]]
    info = _global_normalisers([mask[s] for rank in shards for s in rank], gas)
    total_loss = 0.0
    averaged_grad = torch.zeros_like(params)
    for rank in shards:
        rank_grad = torch.zeros_like(params)
        for s in rank:
            micro = aggregate_loss(
                token_loss(params[s], adv[s], old[s], mask[s]),
                mask[s],
                mode,
                dp_size=dp_size,
                max_tokens=length,
                **info,
            )
            (grad,) = torch.autograd.grad(micro / gas, params)  # DeepSpeed's 1/gas loss scaling
            rank_grad += grad
            total_loss += micro.item() / gas / dp_size
        averaged_grad += rank_grad / dp_size  # DP all-reduce mean
    assert total_loss == pytest.approx(full.item(), rel=1e-12)
    torch.testing.assert_close(averaged_grad, full_grad, rtol=1e-12, atol=1e-14)
    assert full_grad.abs().sum() > 0
