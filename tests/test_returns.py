"""Token-level rewards, returns-to-go and whitening (REINFORCE++ Eq. 8-10, docs/algorithms.md §3-4)."""

from __future__ import annotations

import math

import pytest
import torch

from openrlhf_ext.algorithms import (
    AdvantageConfig,
    broadcast_to_tokens,
    compose_token_advantages,
    compute_sample_advantages,
    compute_token_advantages,
    discounted_returns,
    plan_groups,
    token_returns,
    token_rewards,
    whiten_token_advantages,
)


def _reference_returns(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """The textbook backwards loop G_t = r_t + gamma * G_{t+1}, in float64."""
    rewards = rewards.double()
    out = torch.zeros_like(rewards)
    running = torch.zeros(rewards.shape[0], dtype=torch.float64)
    for t in reversed(range(rewards.shape[1])):
        running = rewards[:, t] + gamma * running
        out[:, t] = running
    return out


def test_discounted_returns_hand_example():
    # G_2 = 3, G_1 = 2 + 0.5 * 3 = 3.5, G_0 = 1 + 0.5 * 3.5 = 2.75
    rewards = torch.tensor([[1.0, 2.0, 3.0]])
    assert discounted_returns(rewards, 0.5).tolist() == [[2.75, 3.5, 3.0]]
    assert discounted_returns(rewards, 1.0).tolist() == [[6.0, 5.0, 3.0]]
    assert discounted_returns(rewards, 0.0).tolist() == [[1.0, 2.0, 3.0]]


def test_discounted_returns_long_sequence_gamma_099():
    gen = torch.Generator().manual_seed(0)
    rewards = torch.randn(3, 4096, generator=gen, dtype=torch.float64)
    reference = _reference_returns(rewards, 0.99)
    torch.testing.assert_close(discounted_returns(rewards, 0.99), reference, atol=1e-10, rtol=1e-10)
    # float32: relative error at float32 precision, no overflow / NaN
    out32 = discounted_returns(rewards.float(), 0.99)
    assert torch.isfinite(out32).all()
    torch.testing.assert_close(out32.double(), reference, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("length", [1, 2, 15, 17, 100, 257])
@pytest.mark.parametrize("gamma", [0.0, 0.3, 0.9, 0.999, 1.0])
def test_discounted_returns_odd_lengths(length, gamma):
    rewards = torch.randn(2, length, generator=torch.Generator().manual_seed(length), dtype=torch.float64)
    torch.testing.assert_close(discounted_returns(rewards, gamma), _reference_returns(rewards, gamma))


def test_discounted_returns_rejects_bad_gamma():
    with pytest.raises(ValueError, match="gamma"):
        discounted_returns(torch.zeros(1, 3), 1.5)
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        discounted_returns(torch.zeros(3), 0.5)


def test_token_rewards_eos_kl_and_clip():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)
    kl = torch.tensor([[0.1, 0.2, 0.3, 0.4], [1.0, 1.0, 1.0, 1.0], [5.0, 5.0, 5.0, 5.0]])
    values = torch.tensor([1.0, 20.0, 7.0])
    out = token_rewards(values, mask, kl, kl_coef=0.5, reward_clip_range=(-10.0, 10.0))
    # row 0: -0.5 * kl, plus 1 on the last action token (t = 2); padding is 0
    # row 1: clipped outcome 10 on t = 1
    # row 2: no action token -> nothing
    expected = torch.tensor([[-0.05, -0.1, 0.85, 0.0], [-0.5, 9.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(out, expected)
    # a negative kl_coef counts as 0; kl=None means no penalty
    assert token_rewards(values, mask, kl, kl_coef=-1.0).tolist() == [[0, 0, 1, 0], [0, 20, 0, 0], [0, 0, 0, 0]]
    assert token_rewards(values, mask).tolist() == [[0, 0, 1, 0], [0, 20, 0, 0], [0, 0, 0, 0]]


def test_token_returns_sum_future_kl():
    mask = torch.tensor([[1, 1, 1, 0]], dtype=torch.bool)
    kl = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    # rewards [-0.05, -0.1, 0.85, 0]: returns [0.7, 0.75, 0.85, 0]
    out = token_returns(torch.tensor([1.0]), mask, kl, kl_coef=0.5)
    torch.testing.assert_close(out, torch.tensor([[0.7, 0.75, 0.85, 0.0]]))
    # gamma 0.5: G_2 = 0.85, G_1 = -0.1 + 0.425 = 0.325, G_0 = -0.05 + 0.1625 = 0.1125
    out = token_returns(torch.tensor([1.0]), mask, kl, kl_coef=0.5, gamma=0.5)
    torch.testing.assert_close(out, torch.tensor([[0.1125, 0.325, 0.85, 0.0]]))


def test_broadcast_equals_returns_without_kl():
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    values = torch.tensor([0.5, -2.0])
    expected = [[0.5, 0.5, 0.5, 0.0, 0.0], [-2.0] * 5]
    assert broadcast_to_tokens(values, mask).tolist() == expected
    assert (token_returns(values, mask) * mask).tolist() == expected


def test_whiten_token_advantages_across_micro_batches():
    # tokens: [1, 2] in batch 0 (third masked), [3] and [-2 masked] in batch 1 -> {1, 2, 3}:
    # mean 2, population var 2/3
    adv = [torch.tensor([[1.0, 2.0, 9.0]]), torch.tensor([[3.0], [-2.0]])]
    masks = [torch.tensor([[1, 1, 0]], dtype=torch.bool), torch.tensor([[1], [0]], dtype=torch.bool)]
    out = whiten_token_advantages(adv, masks)
    s = math.sqrt(3 / 2)
    torch.testing.assert_close(out[0], torch.tensor([[-s, 0.0, 0.0]]))
    torch.testing.assert_close(out[1], torch.tensor([[s], [0.0]]))
    # mean only
    out = whiten_token_advantages(adv, masks, scale=False)
    assert out[0].tolist() == [[-1.0, 0.0, 0.0]] and out[1].tolist() == [[1.0], [0.0]]
    # sample-weighted: sequence 0 = tokens {1, 2} weigh 1/2 each, sequence 1 = {3} weighs 1:
    # mean (0.5 + 1 + 3) / 2 = 2.25, var (0.5 * 1.5625 + 0.5 * 0.0625 + 0.5625) / 2 = 0.6875
    out = whiten_token_advantages(adv, masks, sample_weighted=True)
    r = 1 / math.sqrt(0.6875)
    torch.testing.assert_close(out[0], torch.tensor([[-1.25 * r, -0.25 * r, 0.0]]))
    torch.testing.assert_close(out[1], torch.tensor([[0.75 * r], [0.0]]))
    # all masked: zeros, no NaN
    out = whiten_token_advantages(adv, [torch.zeros(1, 3, dtype=torch.bool), torch.zeros(2, 1, dtype=torch.bool)])
    assert all((o == 0).all() for o in out)


def test_whiten_constant_values_give_zero_not_nan():
    out = whiten_token_advantages([torch.full((2, 3), 0.7)], [torch.ones(2, 3, dtype=torch.bool)])
    assert out[0].abs().max() < 1e-6


def _micro_batches():
    # 2 prompts x 2 samples; global ids 0,1 -> prompt 0, ids 2,3 -> prompt 1.
    # Micro-batch 0 holds ids [3, 0], micro-batch 1 holds ids [1, 2].
    rewards = [torch.tensor([1.0, 1.0]), torch.tensor([0.0, 1.0])]
    masks = [
        torch.tensor([[1, 1, 0], [1, 0, 0]], dtype=torch.bool),
        torch.tensor([[1, 1, 1], [1, 1, 0]], dtype=torch.bool),
    ]
    return rewards, masks, [[3, 0], [1, 2]]


def test_compute_token_advantages_layout_and_filter():
    rewards, masks, index = _micro_batches()
    # prompt 0 = ids (0, 1) = rewards (1, 0): mixed; prompt 1 = ids (2, 3) = (1, 1): all correct.
    out = compute_token_advantages(rewards, masks, index, 2, "reinforce_rej")
    assert [k.tolist() for k in out.keep] == [[False, True], [True, False]]
    assert out.advantages[0].tolist() == [[0, 0, 0], [1, 0, 0]]
    assert out.advantages[1].tolist() == [[0, 0, 0], [0, 0, 0]]
    assert out.returns[0].tolist() == [[0, 0, 0], [1, 0, 0]]
    assert out.stats["groups_mixed"] == 0.5 and out.stats["kept_fraction"] == 0.5


def test_compute_token_advantages_whitening_over_kept_tokens():
    rewards, masks, index = _micro_batches()
    config = AdvantageConfig(filter="both", std_scale="whiten", stats="token")
    out = compute_token_advantages(rewards, masks, index, 2, config)
    # kept: id 0 (reward 1, 1 token), id 1 (reward 0, 3 tokens): token mean 1/4, var 3/16
    s = math.sqrt(3 / 16)
    torch.testing.assert_close(out.advantages[0], torch.tensor([[0.0, 0.0, 0.0], [0.75 / s, 0.0, 0.0]]))
    torch.testing.assert_close(out.advantages[1], torch.tensor([[-0.25 / s] * 3, [0.0, 0.0, 0.0]]))


def test_compute_token_advantages_matches_sample_level_without_kl():
    # KL 0 and gamma 1: every action token carries the sample-level advantage, whitening included.
    gen = torch.Generator().manual_seed(3)
    num_prompts, n, length = 4, 3, 6
    lengths = torch.randint(1, length + 1, (num_prompts * n,), generator=gen)
    masks = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)
    rewards = torch.randint(0, 2, (num_prompts * n,), generator=gen).float()
    configs = ["reinforce", "reinforce_baseline", "lite_ppo", "reinforce_rej", "raft", "rloo"]
    configs.append(AdvantageConfig(baseline="group_mean", std_scale="whiten", stats="sample"))
    for config in configs:
        sample_adv, _ = compute_sample_advantages(rewards.view(num_prompts, n), config, lengths.view(num_prompts, n))
        out = compute_token_advantages([rewards], [masks], [list(range(num_prompts * n))], n, config)
        torch.testing.assert_close(out.advantages[0], sample_adv.view(-1, 1) * masks, msg=str(config))


@pytest.mark.parametrize("config", ["reinforce", "reinforce_baseline", "lite_ppo", "reinforce_rej", "raft", "rloo",
                                    AdvantageConfig(baseline="batch_mean", stats="token")])
def test_group_plan_on_samples_then_tokens_on_regrouped_micro_batches(config):
    # The experience maker plans on single-sample rollout items before the forward passes and composes
    # on the micro-batches the forward passes return (another grouping, other order, KL per token):
    # the result is the one-shot pipeline's, to the bit.
    gen = torch.Generator().manual_seed(5)
    num_prompts, n, length = 3, 4, 5
    total = num_prompts * n
    masks = (torch.arange(length).unsqueeze(0) < torch.randint(1, length + 1, (total, 1), generator=gen)).float()
    rewards = torch.randint(0, 2, (total,), generator=gen).float()
    kl = torch.randn(total, length, generator=gen) * 0.1
    groups = plan_groups(list(rewards.split(1)), list(masks.split(1)), [[i] for i in range(total)], n, config)
    perm = torch.randperm(total, generator=gen)
    batches = [perm[i : i + 5] for i in range(0, total, 5)]
    args = ([masks[b] for b in batches], [b.tolist() for b in batches])
    options = {"kl": [kl[b] for b in batches], "kl_coef": 0.05, "gamma": 0.9, "reward_clip_range": (-5.0, 5.0)}
    composed = compose_token_advantages(groups, *args, config, **options)
    one_shot = compute_token_advantages([rewards[b] for b in batches], *args, n, config, **options)
    for mine, theirs in zip(composed.advantages + composed.returns, one_shot.advantages + one_shot.returns,
                            strict=True):
        assert torch.equal(mine, theirs)
    assert composed.stats == one_shot.stats
    with pytest.raises(ValueError, match="group plan covers 12"):
        compose_token_advantages(groups, [masks[:8]], [list(range(8))], config)


def test_compute_token_advantages_rejects_bad_layout():
    rewards, masks, _ = _micro_batches()
    with pytest.raises(ValueError, match="permutation"):
        compute_token_advantages(rewards, masks, [[0, 0], [1, 2]], 2, "rloo")
    with pytest.raises(ValueError, match="index lengths"):
        compute_token_advantages(rewards, masks, [[0], [1, 2, 3]], 2, "rloo")
    with pytest.raises(ValueError, match="groups of n_samples_per_prompt=3"):
        compute_token_advantages(rewards, masks, [[3, 0], [1, 2]], 3, "rloo")
    with pytest.raises(ValueError, match="same number of micro-batches"):
        compute_token_advantages(rewards, masks[:1], [[3, 0], [1, 2]], 2, "rloo")
