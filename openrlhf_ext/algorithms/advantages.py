"""Sample-level advantages of the grid of docs/algorithms.md §1: one scalar per response, prompt-major [P, n].

Order of the stages (each one a switch of :class:`~.config.AdvantageConfig`):

1. ``filter`` drops whole prompt groups (all wrong / all correct / either);
2. ``positive_only`` drops wrong responses and sets every kept value to 1 (RAFT, arXiv:2504.11343 Eq. 1);
3. ``baseline`` subtracts the group mean, the leave-one-out mean (RLOO) or the kept-batch mean;
4. ``std_scale`` divides by the group std of the rewards (GRPO, arXiv:2504.11343 Eq. 6), by the batch
   std of the raw rewards of all kept samples (Lite PPO, arXiv:2508.08221), or whitens the baselined
   values over the batch (REINFORCE++, arXiv:2501.03262 Eq. 10).

Dropped samples get advantage 0 and ``keep`` False, and they enter no statistic.

Std conventions: ``group`` and ``batch`` use the unbiased std (``torch.std``'s default, as GRPO
and ROLL do); with ``stats='token'`` the batch std uses frequency weights L (Σw(x−m)²/(Σw−1)).
``whiten`` uses OpenRLHF's population variance, ``rstd = var.clamp(min=1e-8).rsqrt()``, so the
stock estimators stay identical.

std == 0 rule: a group (or the kept batch) whose rewards are all *exactly equal* has std 0 and a
mean equal to that common reward, whatever the float rounding of the sum would give (all 0.1 in
float32 has a computed std of ~1e-8, which would blow the advantages up to ~0.9 or ~1e7). Such a
group is not divided: the numerator is left unscaled; with a mean baseline it is exactly 0. Stock
OpenRLHF's ``(r − mean) / (std + 1e-9)`` agrees for binary rewards and differs (by design) for
identical non-binary ones. Such groups are counted in ``stats['zero_std_groups']``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from openrlhf_ext.algorithms.config import AdvantageConfig, resolve_config

WHITEN_MIN_VAR = 1e-8
"""Variance floor of whitening; stock OpenRLHF clamps the variance at this value before rsqrt."""


class AdvantageResult(NamedTuple):
    """Output of :func:`compute_advantage_result`.

    Attributes:
        advantages: float [P, n]; 0 where ``keep`` is False.
        keep: bool [P, n]; False for samples removed by ``filter`` or ``positive_only``.
        stats: group metrics (docs/algorithms.md, "Metrics"), as Python numbers:
            ``groups_all_correct`` / ``groups_all_wrong`` / ``groups_mixed`` (fractions of the P
            prompt groups, before filtering), ``kept_fraction`` (fraction of the P·n samples kept),
            ``zero_std_groups`` (number of kept groups with at least 2 kept samples whose kept
            rewards all coincide), ``zero_std_batch`` (1 when ``std_scale='batch'`` found a batch
            std of 0 and left the values unscaled, else 0).
    """

    advantages: torch.Tensor
    keep: torch.Tensor
    stats: dict[str, float]


def _check_rewards(rewards: torch.Tensor) -> torch.Tensor:
    if not isinstance(rewards, torch.Tensor) or rewards.dim() != 2:
        raise ValueError(
            f"rewards must be a 2-D tensor [P, n] (prompt-major), got {getattr(rewards, 'shape', rewards)}"
        )
    if rewards.numel() == 0:
        raise ValueError(f"rewards must not be empty, got shape {tuple(rewards.shape)}")
    rewards = rewards.to(torch.promote_types(rewards.dtype, torch.float32))
    if not torch.isfinite(rewards).all():
        raise ValueError("rewards contain NaN or inf")
    return rewards


def _sample_weights(config: AdvantageConfig, rewards: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """Weight of each sample in batch statistics: 1, or its action-token count L (``stats='token'``)."""
    if lengths is not None:
        if tuple(lengths.shape) != tuple(rewards.shape):
            raise ValueError(f"lengths shape {tuple(lengths.shape)} != rewards shape {tuple(rewards.shape)}")
        if (lengths < 0).any():
            raise ValueError("lengths must be >= 0")
    if config.stats == "sample" or not config.uses_batch_stats:
        return torch.ones_like(rewards)
    if lengths is None:
        raise ValueError(
            "stats='token' weights batch statistics by response length: pass lengths [P, n] (action-token counts)"
        )
    return lengths.to(device=rewards.device, dtype=rewards.dtype)


def _group_keep(
    config: AdvantageConfig, all_correct: torch.Tensor, all_wrong: torch.Tensor, all_equal: torch.Tensor
) -> torch.Tensor:
    if config.filter == "all_wrong":
        return ~all_wrong
    if config.filter == "all_correct":
        return ~all_correct
    if config.filter == "both":
        return ~(all_wrong | all_correct)
    if config.filter == "zero_std":
        return ~all_equal
    return torch.ones_like(all_correct)


def all_equal(values: torch.Tensor, keep: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """True where the kept ``values`` (along ``dim``, or all of them) are exactly equal: the std == 0 test.

    Exact comparison, not ``std < eps``: identical non-binary rewards (all 0.1) are caught although
    their float std is ~1e-8, and distinct rewards 1e-6 apart are not.
    """
    hi = torch.where(keep, values, torch.full_like(values, -torch.inf))
    lo = torch.where(keep, values, torch.full_like(values, torch.inf))
    if dim is None:
        return hi.max() <= lo.min()
    return hi.amax(dim, keepdim=True) <= lo.amin(dim, keepdim=True)


def _group_mean_std(
    values: torch.Tensor, keep: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-group mean and unbiased std over kept samples, and the kept count; [P, 1] each.

    A group whose kept values are all equal gets that value as its mean and a std of exactly 0.
    """
    keep_f = keep.to(values.dtype)
    count = keep_f.sum(-1, keepdim=True)
    mean = (values * keep_f).sum(-1, keepdim=True) / count.clamp(min=1)
    sq = ((values - mean).square() * keep_f).sum(-1, keepdim=True)
    std = (sq / (count - 1).clamp(min=1)).sqrt()
    equal = all_equal(values, keep, dim=-1) & (count >= 1)
    common = torch.where(keep, values, torch.full_like(values, -torch.inf)).amax(-1, keepdim=True)
    mean = torch.where(equal, common, mean)
    std = torch.where(equal, torch.zeros_like(std), std)
    return mean, std, count


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    total = weights.sum()
    return (values * weights).sum() / total.clamp(min=torch.finfo(values.dtype).tiny)


def _divide_unless_zero(values: torch.Tensor, std: torch.Tensor, eps: float) -> torch.Tensor:
    """values / (std + eps) where std > 0; unscaled where std == 0 (the documented std == 0 rule)."""
    return torch.where(std > 0, values / (std + eps), values)


def compute_advantage_result(
    rewards: torch.Tensor,
    config: AdvantageConfig | str,
    lengths: torch.Tensor | None = None,
) -> AdvantageResult:
    """Advantages, keep-mask and group metrics of one rollout batch (docs/algorithms.md §1).

    Args:
        rewards: float [P, n], prompt-major outcome rewards r[i, j].
        config: a grid point or a preset name (see :data:`~.config.PRESETS`).
        lengths: [P, n] action-token counts L[i, j]; needed only when ``stats='token'`` and a
            batch statistic is used.

    Raises:
        ValueError: malformed rewards/lengths, NaN/inf rewards, or a group-based mode with n < 2.
    """
    config = resolve_config(config)
    rewards = _check_rewards(rewards)
    num_prompts, n = rewards.shape
    if config.uses_groups and n < 2:
        raise ValueError(f"{config} compares the responses of a prompt group: it needs n_samples_per_prompt >= 2")
    weights = _sample_weights(config, rewards, lengths)

    correct = rewards > config.correct_threshold
    all_correct = correct.all(-1)
    all_wrong = (~correct).all(-1)
    same_reward = all_equal(rewards, torch.ones_like(correct), dim=-1).squeeze(-1)
    keep = _group_keep(config, all_correct, all_wrong, same_reward).unsqueeze(-1).expand(num_prompts, n)
    if config.positive_only:
        keep = keep & correct
    keep = keep.contiguous()
    keep_f = keep.to(rewards.dtype)
    batch_w = weights * keep_f

    # a baseline never meets positive_only (AdvantageConfig refuses it), so it always acts on the rewards
    reward_mean, reward_std, kept_count = _group_mean_std(rewards, keep)
    values = torch.ones_like(rewards) if config.positive_only else rewards
    if config.baseline == "group_mean":
        values = values - reward_mean
    elif config.baseline == "group_loo":
        others = ((values * keep_f).sum(-1, keepdim=True) - values) / (kept_count - 1).clamp(min=1)
        values = values - others
    elif config.baseline == "batch_mean":
        values = values - _weighted_mean(values, batch_w)

    zero_std_groups = int(((reward_std == 0) & (kept_count >= 2)).sum())
    zero_std_batch = 0
    if config.std_scale == "group":
        values = _divide_unless_zero(values, reward_std, config.std_eps)
    elif config.std_scale == "batch":
        mean = _weighted_mean(rewards, batch_w)
        dof = (batch_w.sum() - 1).clamp(min=0)
        var = ((rewards - mean).square() * batch_w).sum() / dof if dof > 0 else torch.zeros((), dtype=rewards.dtype)
        std = torch.where(all_equal(rewards, batch_w > 0), torch.zeros_like(var), var.sqrt())
        zero_std_batch = int(std == 0)
        values = _divide_unless_zero(values, std, config.std_eps)
    elif config.std_scale == "whiten":
        mean = _weighted_mean(values, batch_w)
        var = _weighted_mean((values - mean).square(), batch_w)
        values = (values - mean) * var.clamp(min=WHITEN_MIN_VAR).rsqrt()

    advantages = torch.where(keep, values, torch.zeros_like(values))
    num_all_correct, num_all_wrong = int(all_correct.sum()), int(all_wrong.sum())
    num_mixed = int((~(all_correct | all_wrong)).sum())
    stats = {
        "groups_all_correct": num_all_correct / num_prompts,
        "groups_all_wrong": num_all_wrong / num_prompts,
        "groups_mixed": num_mixed / num_prompts,
        "kept_fraction": int(keep.sum()) / keep.numel(),
        "zero_std_groups": zero_std_groups,
        "zero_std_batch": zero_std_batch,
    }
    return AdvantageResult(advantages, keep, stats)


def compute_sample_advantages(
    rewards: torch.Tensor,
    config: AdvantageConfig | str,
    lengths: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(advantages [P, n], keep [P, n])`` of the grid; see :func:`compute_advantage_result` for metrics."""
    result = compute_advantage_result(rewards, config, lengths)
    return result.advantages, result.keep
