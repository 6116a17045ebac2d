"""Our advantage path reproduces stock OpenRLHF 0.11.2 for its own estimators (docs/algorithms.md §6).

The stock side is the real ``RemoteExperienceMaker.compute_advantages_and_returns`` on real
``Experience`` objects; the instance is made with ``__new__`` and given only the attributes that
method reads (``strategy.args``, ``kl_ctl``, ``advantage_estimator``). ``gae`` needs a critic and
stays on the stock path, so it is not compared here.

Our advantages are 0 off the action mask where stock leaves whitened garbage, so advantages are
compared on action tokens (and checked to be 0 elsewhere); returns are compared everywhere.

Tolerance: 1e-6 absolute. Stock's float32 backwards loop over the time axis drifts by a few ulp
per step (we accumulate returns in float64): up to ~1e-6 at 40 tokens with gamma < 1 and
whitening (there the bound is 1e-6 + 1e-6·|stock|), ~5e-6 at 4096 tokens.
``test_float32_gap_is_stock_rounding`` shows that in both cases our float32 result is within
1e-6 of a float64 run of stock, closer than stock's own float32 run.
"""

from __future__ import annotations

import copy

import pytest
import torch
from openrlhf.trainer.ppo_utils.experience import Experience
from support.stock_openrlhf import max_advantage_gap, shuffled_micro_batches, stock_maker

from openrlhf_ext.algorithms import PRESETS, compute_token_advantages

STOCK_CRITIC_FREE = ("reinforce", "rloo", "reinforce_baseline", "group_norm", "dr_grpo", "flash_reinforce")


def _rollout(seed, *, num_prompts=6, n=4, micro_batch=5, max_len=40, continuous=False, dtype=torch.float32):
    """Experiences as OpenRLHF builds them: samples shuffled into micro-batches, each with its
    global sample ids in ``index``, right-padded action masks, per-token KL."""
    gen = torch.Generator().manual_seed(seed)
    total = num_prompts * n
    if continuous:
        rewards = torch.randn(total, generator=gen)
    else:
        rewards = torch.randint(0, 2, (total,), generator=gen).float()
        rewards[:n] = 1.0  # one all-correct group (std 0)
    lengths = torch.randint(1, max_len + 1, (total,), generator=gen)
    experiences = []
    for ids, mask in shuffled_micro_batches(lengths, micro_batch, gen):
        kl = torch.rand(mask.shape, generator=gen, dtype=torch.float64) * 0.2 * mask
        experiences.append(
            Experience(rewards=rewards[ids].to(dtype), kl=kl.to(dtype), action_mask=mask, index=list(ids), info={})
        )
    return experiences


def _ours(experiences, estimator, *, n, gamma, kl_coef, clip_range, no_std_norm):
    effective_gamma = gamma if PRESETS[estimator].honours_gamma else 1.0
    return compute_token_advantages(
        [e.rewards for e in experiences],
        [e.action_mask for e in experiences],
        [e.index for e in experiences],
        n,
        estimator,
        kl=[e.kl for e in experiences],
        kl_coef=kl_coef,
        gamma=effective_gamma,
        reward_clip_range=clip_range,
        whiten_std=not no_std_norm,
    )


def _stock(experiences, estimator, **settings):
    return stock_maker(estimator, **settings).compute_advantages_and_returns(copy.deepcopy(experiences))


def _compare(estimator, experiences, *, n=4, gamma=1.0, kl_coef=0.0, clip_range=(-10.0, 10.0), no_std_norm=False):
    settings = dict(n=n, gamma=gamma, kl_coef=kl_coef, clip_range=clip_range, no_std_norm=no_std_norm)
    ours = _ours(experiences, estimator, **settings)
    stock = _stock(experiences, estimator, **settings)
    float32_drift = experiences[0].kl.dtype == torch.float32 and gamma < 1 and PRESETS[estimator].honours_gamma
    rtol = 1e-6 if float32_drift else 0.0
    for k, (exp, adv, ret) in enumerate(zip(stock, ours.advantages, ours.returns, strict=True)):
        mask = exp.action_mask
        torch.testing.assert_close(adv[mask], exp.advantages[mask], atol=1e-6, rtol=rtol)
        assert (adv[~mask] == 0).all(), f"{estimator} mb {k}: advantage off the action mask"
        torch.testing.assert_close(ret, exp.returns, atol=1e-6, rtol=rtol)
    assert all(k.all() for k in ours.keep)


@pytest.mark.parametrize("estimator", STOCK_CRITIC_FREE)
@pytest.mark.parametrize("kl_coef", [0.0, 0.05])
@pytest.mark.parametrize("gamma", [1.0, 0.97])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_matches_stock(estimator, kl_coef, gamma, dtype):
    seed = 4 * STOCK_CRITIC_FREE.index(estimator) + 2 * (kl_coef > 0) + (gamma < 1)
    _compare(estimator, _rollout(seed=seed, dtype=dtype), gamma=gamma, kl_coef=kl_coef)


@pytest.mark.parametrize(
    ("estimator", "gamma", "kl_coef", "shape"),
    [
        ("reinforce", 0.97, 0.05, dict(num_prompts=6, n=4, max_len=40)),
        ("group_norm", 1.0, 0.001, dict(num_prompts=2, n=4, max_len=4096)),
    ],
)
def test_float32_gap_is_stock_rounding(estimator, gamma, kl_coef, shape):
    """Where float32 results differ from stock by more than 1e-6 (long responses, gamma < 1),
    stock's own float32 time loop is what drifts: ours stays closer to a float64 run of stock."""
    settings = dict(n=shape["n"], gamma=gamma, kl_coef=kl_coef, clip_range=(-10.0, 10.0), no_std_norm=False)
    rollout32 = _rollout(seed=3, micro_batch=3, **shape)
    reference = _stock(_rollout(seed=3, micro_batch=3, dtype=torch.float64, **shape), estimator, **settings)
    ours_gap = max_advantage_gap(_ours(rollout32, estimator, **settings).advantages, reference)
    stock_gap = max_advantage_gap([e.advantages for e in _stock(rollout32, estimator, **settings)], reference)
    assert ours_gap < 1e-6
    assert ours_gap < stock_gap


@pytest.mark.parametrize("estimator", STOCK_CRITIC_FREE)
def test_matches_stock_continuous_rewards_and_tight_clip(estimator):
    # the clip applies to the baselined value, as in stock's compute_reward
    _compare(estimator, _rollout(seed=7, continuous=True), kl_coef=0.01, clip_range=(-0.5, 0.8))


@pytest.mark.parametrize("estimator", ["reinforce", "reinforce_baseline"])
def test_matches_stock_no_std_norm(estimator):
    _compare(estimator, _rollout(seed=11), kl_coef=0.05, gamma=0.9, no_std_norm=True)


def test_matches_stock_two_samples_per_prompt_one_micro_batch():
    experiences = _rollout(seed=5, num_prompts=3, n=2, micro_batch=6)
    for estimator in STOCK_CRITIC_FREE:
        _compare(estimator, experiences, n=2, kl_coef=0.05)
