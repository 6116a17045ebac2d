"""The advantage grid (docs/algorithms.md §1) on hand-written reward tables.

Every expected value below is worked out by hand from the definitions in docs/algorithms.md §1 (the arithmetic is in
the comments), never recomputed by the code under test.
"""

from __future__ import annotations

import math

import pytest
import torch

from openrlhf_ext.algorithms import (
    PRESETS,
    STOCK_ESTIMATORS,
    AdvantageConfig,
    compute_advantage_result,
    compute_sample_advantages,
    get_preset,
)

T, F = True, False

# Table A: binary {0, 1} rewards, P = 3 prompts x n = 4 samples: one mixed group, one all-wrong
# group, one all-correct group. Correct = r > 0.
R_A = torch.tensor([[1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
# Action-token counts for the token-weighted presets: 6 + 8 + 4 = 18 tokens.
L_A = torch.tensor([[1, 3, 1, 1], [2, 2, 2, 2], [1, 1, 1, 1]])
ALL = [[T] * 4] * 3
ZERO = [0.0] * 4

# lite_ppo's batch std: the 12 raw rewards are 7 ones and 5 zeros, mean 7/12,
# unbiased var = (7 (5/12)^2 + 5 (7/12)^2) / 11 = 420 / 1584.
LITE_STD = math.sqrt(420 / 1584)
# reinforce: token-weighted, 7 tokens of reward 1 and 11 of reward 0: mean 7/18,
# population var 77/324, so A(1) = (11/18) * 18/sqrt(77) = 11/sqrt(77), A(0) = -7/sqrt(77).
S77 = math.sqrt(77)
# reinforce_baseline: group means 3/4, 0, 1 -> row 0 becomes [1/4, -3/4, 1/4, 1/4], others 0.
# Token-weighted mean: (3 * 1/4 - 3 * 3/4) / 18 = -1/12 -> row 0 [1/3, -2/3, 1/3, 1/3], others 1/12.
# Population var: (3 * 1/9 + 3 * 4/9 + 12 * 1/144) / 18 = 7/72.
RB = math.sqrt(72 / 7)

EXPECTED_A = {
    "reinforce_raw": (R_A.tolist(), ALL),
    "raft": ([[1, 0, 1, 1], ZERO, [1, 1, 1, 1]], [[T, F, T, T], [F] * 4, [T] * 4]),
    "raft_pp": ([[1, 0, 1, 1], ZERO, [1, 1, 1, 1]], [[T, F, T, T], [F] * 4, [T] * 4]),
    "reinforce_rej": ([[1, 0, 1, 1], ZERO, ZERO], [[T] * 4, [F] * 4, [F] * 4]),
    "reinforce_rej_wrong": ([[1, 0, 1, 1], ZERO, [1, 1, 1, 1]], [[T] * 4, [F] * 4, [T] * 4]),
    "reinforce_rej_correct": ([[1, 0, 1, 1], ZERO, ZERO], [[T] * 4, [T] * 4, [F] * 4]),
    "reinforce_mean_zero": ([[0.25, -0.75, 0.25, 0.25], ZERO, ZERO], ALL),
    # only the mixed group survives; its unbiased std is sqrt(0.75 / 3) = 0.5, no baseline: r / 0.5
    "reinforce_rej_std": ([[2, 0, 2, 2], ZERO, ZERO], [[T] * 4, [F] * 4, [F] * 4]),
    # (r - 3/4) / 0.5; the two constant groups have std 0 and numerator 0
    "group_norm": ([[0.5, -1.5, 0.5, 0.5], ZERO, ZERO], ALL),
    "dr_grpo": ([[0.25, -0.75, 0.25, 0.25], ZERO, ZERO], ALL),
    "lite_ppo": ([[0.25 / LITE_STD, -0.75 / LITE_STD, 0.25 / LITE_STD, 0.25 / LITE_STD], ZERO, ZERO], ALL),
    "reinforce": (
        [[11 / S77, -7 / S77, 11 / S77, 11 / S77], [-7 / S77] * 4, [11 / S77] * 4],
        ALL,
    ),
    "reinforce_baseline": (
        [[RB / 3, -2 * RB / 3, RB / 3, RB / 3], [RB / 12] * 4, [RB / 12] * 4],
        ALL,
    ),
    # leave-one-out: a correct sample sees (3 - 1)/3 = 2/3, the wrong one sees 3/3 = 1
    "rloo": ([[1 / 3, -1, 1 / 3, 1 / 3], ZERO, ZERO], ALL),
    # batch mean of the 12 rewards is 7/12
    "flash_reinforce": ((R_A - 7 / 12).tolist(), ALL),
}


def test_every_spec_preset_is_covered():
    assert set(EXPECTED_A) | {"gae"} == set(PRESETS)
    assert set(STOCK_ESTIMATORS) <= set(PRESETS)


@pytest.mark.parametrize("name", sorted(EXPECTED_A))
def test_preset_on_binary_table(name):
    expected_adv, expected_keep = EXPECTED_A[name]
    adv, keep = compute_sample_advantages(R_A, name, lengths=L_A)
    torch.testing.assert_close(adv, torch.tensor(expected_adv, dtype=torch.float32), atol=1e-6, rtol=0)
    assert keep.tolist() == expected_keep


def test_group_metrics_on_binary_table():
    stats = compute_advantage_result(R_A, "reinforce_rej_wrong").stats
    assert stats["groups_all_correct"] == pytest.approx(1 / 3)
    assert stats["groups_all_wrong"] == pytest.approx(1 / 3)
    assert stats["groups_mixed"] == pytest.approx(1 / 3)
    assert stats["kept_fraction"] == pytest.approx(8 / 12)
    # kept groups: the mixed one (std 0.5) and the all-correct one (std 0)
    assert stats["zero_std_groups"] == 1
    assert compute_advantage_result(R_A, "group_norm").stats["zero_std_groups"] == 2


def test_plus_minus_one_rewards():
    # {-1, +1}: correct = r > 0. Group 0 = [+1, -1, -1, -1]: mean -1/2, unbiased std = sqrt(3/3) = 1.
    rewards = torch.tensor([[1.0, -1.0, -1.0, -1.0], [-1.0, -1.0, -1.0, -1.0]])
    adv, keep = compute_sample_advantages(rewards, "group_norm")
    torch.testing.assert_close(adv, torch.tensor([[1.5, -0.5, -0.5, -0.5], [0.0] * 4]), atol=1e-6, rtol=0)
    adv, keep = compute_sample_advantages(rewards, "raft")
    assert keep.tolist() == [[T, F, F, F], [F] * 4]
    assert adv.tolist() == [[1.0, 0.0, 0.0, 0.0], [0.0] * 4]
    adv, keep = compute_sample_advantages(rewards, "reinforce_rej")
    assert keep.tolist() == [[T] * 4, [F] * 4]
    assert adv.tolist() == [[1.0, -1.0, -1.0, -1.0], [0.0] * 4]


def test_continuous_rewards():
    # Group [0.2, 0.4, 0.9]: mean 0.5, deviations [-0.3, -0.1, 0.4], unbiased var 0.26 / 2 = 0.13.
    rewards = torch.tensor([[0.2, 0.4, 0.9]], dtype=torch.float64)
    adv, _ = compute_sample_advantages(rewards, "group_norm")
    s = math.sqrt(0.13)
    torch.testing.assert_close(adv, torch.tensor([[-0.3 / s, -0.1 / s, 0.4 / s]], dtype=torch.float64))
    # RAFT keeps every sample with r > 0 and gives it advantage 1, not r
    adv, keep = compute_sample_advantages(rewards, "raft")
    assert adv.tolist() == [[1.0, 1.0, 1.0]] and keep.all()
    # a threshold of 0.3 makes 0.2 wrong
    adv, keep = compute_sample_advantages(rewards, AdvantageConfig.from_preset("raft", correct_threshold=0.3))
    assert keep.tolist() == [[F, T, T]]
    # rloo: others' means are 0.65, 0.55, 0.3
    adv, _ = compute_sample_advantages(rewards, "rloo")
    torch.testing.assert_close(adv, torch.tensor([[-0.45, -0.15, 0.6]], dtype=torch.float64))


def test_std_zero_group_left_unscaled_and_counted():
    # No baseline + group std: a constant group [2, 2] has std 0 and stays unscaled.
    rewards = torch.tensor([[2.0, 2.0], [1.0, 3.0]])
    result = compute_advantage_result(rewards, AdvantageConfig(std_scale="group", std_eps=0.0))
    # group 1: std of [1, 3] = sqrt(2)
    torch.testing.assert_close(
        result.advantages, torch.tensor([[2.0, 2.0], [1 / math.sqrt(2), 3 / math.sqrt(2)]]), atol=1e-6, rtol=0
    )
    assert result.stats["zero_std_groups"] == 1


def test_identical_non_binary_rewards_follow_the_std_zero_rule():
    # Eight times 0.1 in float32: the float mean is off by an ulp and the std is ~8e-9, not 0.
    # Without the exact-equality rule GRPO would give (0.1 - mean) / (8e-9 + 1e-9) ~ -0.83 and the
    # unbaselined group std ~1e7; the rule gives 0 and 0.1.
    rewards = torch.tensor([[0.1] * 8, [0.0, 1.0] * 4])
    grpo = compute_advantage_result(rewards, "group_norm")
    assert grpo.advantages[0].tolist() == [0.0] * 8
    assert grpo.stats["zero_std_groups"] == 1
    # mixed group: (r - 0.5) / (std + 1e-9), unbiased std of [0, 1] * 4 = sqrt(2/7)
    torch.testing.assert_close(grpo.advantages[1], torch.tensor([-0.5, 0.5] * 4) / math.sqrt(2 / 7))
    unbaselined = compute_advantage_result(rewards, AdvantageConfig(std_scale="group"))
    torch.testing.assert_close(unbaselined.advantages[0], torch.full((8,), 0.1))
    # Lite PPO on a batch of identical rewards: batch std 0, counted, numerator (exactly 0) unscaled.
    lite = compute_advantage_result(torch.full((2, 8), 0.1), "lite_ppo")
    assert lite.advantages.abs().sum() == 0
    assert (lite.stats["zero_std_batch"], lite.stats["zero_std_groups"]) == (1, 2)


def test_nearly_equal_rewards_are_not_zero_std():
    # 0.1 and 0.1 + 1e-6 differ: a real (tiny) spread, divided as usual -> +-0.7071 at n = 2.
    rewards = torch.tensor([[0.1, 0.1 + 1e-6]], dtype=torch.float64)
    result = compute_advantage_result(rewards, AdvantageConfig(baseline="group_mean", std_scale="group", std_eps=0.0))
    torch.testing.assert_close(result.advantages, torch.tensor([[-1.0, 1.0]], dtype=torch.float64) / math.sqrt(2))
    assert result.stats["zero_std_groups"] == 0


def test_zero_std_filter_drops_groups_without_spread():
    rewards = torch.tensor([[0.3, 0.3, 0.3], [0.2, 0.5, 0.8], [0.0, 0.0, 0.0]])
    result = compute_advantage_result(rewards, AdvantageConfig(filter="zero_std", baseline="group_mean"))
    assert result.keep.tolist() == [[F, F, F], [T, T, T], [F, F, F]]
    torch.testing.assert_close(result.advantages, torch.tensor([[0.0, 0, 0], [-0.3, 0.0, 0.3], [0.0, 0, 0]]))
    assert result.stats["kept_fraction"] == pytest.approx(3 / 9)


def test_batch_std_zero_left_unscaled():
    rewards = torch.tensor([[1.0, 1.0], [1.0, 1.0]])
    result = compute_advantage_result(rewards, AdvantageConfig(std_scale="batch"))
    assert result.advantages.tolist() == [[1.0, 1.0], [1.0, 1.0]]
    assert result.stats["zero_std_batch"] == 1
    assert result.stats["zero_std_groups"] == 2
    adv, _ = compute_sample_advantages(rewards, "lite_ppo")
    assert adv.tolist() == [[0.0, 0.0], [0.0, 0.0]]


def test_single_prompt_two_samples():
    # [1, 0]: mean 1/2, unbiased std sqrt(1/2)
    adv, keep = compute_sample_advantages(torch.tensor([[1.0, 0.0]]), "group_norm")
    torch.testing.assert_close(adv, torch.tensor([[0.5 / math.sqrt(0.5), -0.5 / math.sqrt(0.5)]]))
    adv, _ = compute_sample_advantages(torch.tensor([[1.0, 0.0]]), "rloo")
    assert adv.tolist() == [[1.0, -1.0]]


@pytest.mark.parametrize(
    "config",
    [
        "reinforce_rej",
        "reinforce_rej_std",
        AdvantageConfig(filter="both", baseline="batch_mean", std_scale="batch"),
        AdvantageConfig(filter="both", baseline="group_mean", std_scale="whiten", stats="token"),
        AdvantageConfig(filter="both", baseline="group_loo", std_scale="group"),
    ],
)
def test_all_filtered_batch_has_no_nan(config):
    rewards = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    result = compute_advantage_result(rewards, config, lengths=torch.full((2, 3), 5))
    assert not result.keep.any()
    assert result.advantages.tolist() == [[0.0] * 3, [0.0] * 3]
    assert result.stats["kept_fraction"] == 0.0


def test_filtered_samples_do_not_enter_batch_statistics():
    # Only group 0 = [1, 0] survives: its batch mean is 1/2 (with group 1 it would be 3/4).
    rewards = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    adv, keep = compute_sample_advantages(rewards, AdvantageConfig(filter="both", baseline="batch_mean"))
    assert adv.tolist() == [[0.5, -0.5], [0.0, 0.0]]
    # Batch std over kept [1, 0] is sqrt(1/2) (over all four it would be 1/2).
    adv, _ = compute_sample_advantages(rewards, AdvantageConfig(filter="both", std_scale="batch", std_eps=0.0))
    torch.testing.assert_close(adv, torch.tensor([[math.sqrt(2), 0.0], [0.0, 0.0]]))
    # Whitening over kept tokens only: [1, 0] with lengths [1, 3] -> mean 1/4, var 3/16.
    adv, _ = compute_sample_advantages(
        rewards,
        AdvantageConfig(filter="both", std_scale="whiten", stats="token"),
        lengths=torch.tensor([[1, 3], [100, 100]]),
    )
    torch.testing.assert_close(adv, torch.tensor([[0.75 / math.sqrt(3 / 16), -0.25 / math.sqrt(3 / 16)], [0.0, 0.0]]))


def test_sample_vs_token_statistics():
    # batch_mean over [[1, 0]] with lengths [3, 1]: sample mean 1/2, token mean 3/4.
    rewards = torch.tensor([[1.0, 0.0]])
    lengths = torch.tensor([[3, 1]])
    adv, _ = compute_sample_advantages(rewards, AdvantageConfig(baseline="batch_mean", stats="sample"), lengths)
    assert adv.tolist() == [[0.5, -0.5]]
    adv, _ = compute_sample_advantages(rewards, AdvantageConfig(baseline="batch_mean", stats="token"), lengths)
    assert adv.tolist() == [[0.25, -0.75]]
    # Token-weighted unbiased batch std (frequency weights): mean 3/4, var (3/16 + 9/16) / (4 - 1) = 1/4.
    adv, _ = compute_sample_advantages(rewards, AdvantageConfig(std_scale="batch", stats="token", std_eps=0.0), lengths)
    assert adv.tolist() == [[2.0, 0.0]]


def test_group_norm_epsilon_matches_stock_convention():
    # stock divides by std + 1e-9: for a tiny std the epsilon is visible, and reproduced.
    rewards = torch.tensor([[0.0, 2e-9]], dtype=torch.float64)
    std = math.sqrt(2) * 1e-9
    adv, _ = compute_sample_advantages(rewards, "group_norm")
    torch.testing.assert_close(adv, torch.tensor([[-1e-9 / (std + 1e-9), 1e-9 / (std + 1e-9)]], dtype=torch.float64))


def test_from_preset_and_overrides():
    assert AdvantageConfig.from_preset("group_norm", std_scale="none") == AdvantageConfig.from_preset("dr_grpo")
    assert AdvantageConfig.from_preset("reinforce_raw", filter="both") == AdvantageConfig.from_preset("reinforce_rej")
    with pytest.raises(ValueError, match="critic"):
        AdvantageConfig.from_preset("gae")
    with pytest.raises(ValueError, match="critic"):
        compute_sample_advantages(R_A, "gae")
    with pytest.raises(ValueError, match="raft_pp"):
        AdvantageConfig.from_preset("grpo_typo")
    with pytest.raises(ValueError, match="unknown advantage switch"):
        AdvantageConfig.from_preset("raft", positive=True)


def test_preset_registry_training_settings():
    assert get_preset("raft").policy_loss_type == "vanilla"
    assert get_preset("raft_pp").policy_loss_type == "ppo"
    assert get_preset("dr_grpo").loss_agg_mode == "seq-mean-token-sum-norm"
    assert get_preset("lite_ppo").loss_agg_mode == "token-mean"
    assert get_preset("group_norm").loss_agg_mode is None
    assert get_preset("group_norm").requires_group and get_preset("reinforce_rej").requires_group
    assert not get_preset("raft").requires_group and not get_preset("reinforce").requires_group
    assert [name for name, p in PRESETS.items() if p.honours_gamma] == ["reinforce", "gae"]
    assert all(p.source for p in PRESETS.values())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"filter": "wrong"}, "filter='wrong' is not valid; choose one of none, all_wrong, all_correct, both"),
        ({"baseline": "mean"}, "baseline='mean'"),
        ({"std_scale": "global"}, "std_scale='global'"),
        ({"stats": "tokens"}, "stats='tokens'"),
        ({"positive_only": 1}, "positive_only must be a bool"),
        ({"positive_only": True, "baseline": "group_mean"}, "would make every advantage 0"),
        ({"std_eps": -1.0}, "std_eps"),
    ],
)
def test_invalid_switches(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        AdvantageConfig(**kwargs)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="n_samples_per_prompt >= 2"):
        compute_sample_advantages(torch.tensor([[1.0], [0.0]]), "group_norm")
    with pytest.raises(ValueError, match="pass lengths"):
        compute_sample_advantages(R_A, "reinforce")
    with pytest.raises(ValueError, match="NaN or inf"):
        compute_sample_advantages(torch.tensor([[1.0, float("nan")]]), "rloo")
    with pytest.raises(ValueError, match="2-D"):
        compute_sample_advantages(torch.tensor([1.0, 0.0]), "rloo")
    with pytest.raises(ValueError, match="lengths shape"):
        compute_sample_advantages(R_A, "reinforce", lengths=torch.ones(3, 3))
    with pytest.raises(TypeError):
        compute_sample_advantages(R_A, 3)


def test_single_sample_prompts_without_group_modes():
    # n = 1 is fine for modes without group statistics: flash_reinforce subtracts the batch mean.
    adv, keep = compute_sample_advantages(torch.tensor([[1.0], [0.0], [0.0], [1.0]]), "flash_reinforce")
    assert adv.tolist() == [[0.5], [-0.5], [-0.5], [0.5]] and keep.all()


def test_integer_rewards_promoted():
    adv, _ = compute_sample_advantages(torch.tensor([[1, 0]]), "dr_grpo")
    assert adv.dtype == torch.float32 and adv.tolist() == [[0.5, -0.5]]
