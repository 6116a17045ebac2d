"""Token-level rewards, returns-to-go and whitening (REINFORCE++, arXiv:2501.03262 Eq. 8-10).

The outcome value of a response sits on its last action token (its EOS), every action token
carries the KL penalty −β·KL_t, and the return of token t is the discounted sum of the rewards
from t on (the KL "in reward" of docs/algorithms.md §4). Everything here is vectorised over the time axis: gamma = 1 is
a reversed cumulative sum, gamma < 1 a two-level blocked scan of gamma-power matrices whose
entries are all ≤ 1, so nothing overflows even at 4096+ tokens.

:func:`compute_token_advantages` chains the whole pipeline over the micro-batches of a rollout
(:func:`plan_groups`, reward-only, then :func:`compose_token_advantages`, after the forward passes),
in the layout OpenRLHF's experience maker keeps them (lists of [b, T] tensors plus each sample's
global index), so that stock estimators reproduce ``RemoteExperienceMaker.compute_advantages_and_returns``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from openrlhf_ext.algorithms.advantages import WHITEN_MIN_VAR, AdvantageResult, compute_advantage_result
from openrlhf_ext.algorithms.config import AdvantageConfig, resolve_config


def _check_gamma(gamma: float) -> None:
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")


def _discount_matrix(size: int, factor: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """M[i, j] = factor^(j − i) for j ≥ i, else 0: ``x @ M.T`` is the discounted suffix sum of a block."""
    steps = torch.arange(size, dtype=dtype, device=device)
    expo = steps.unsqueeze(0) - steps.unsqueeze(1)
    powers = torch.pow(torch.tensor(factor, dtype=dtype, device=device), expo.clamp(min=0))
    return torch.where(expo >= 0, powers, torch.zeros_like(powers))


def discounted_returns(rewards: torch.Tensor, gamma: float) -> torch.Tensor:
    """G_t = Σ_{s ≥ t} gamma^(s − t) · rewards_s along the last axis, for [B, T] rewards.

    gamma = 1: reversed cumulative sum (same summation order as a backwards loop). gamma < 1: the
    time axis is cut into blocks of K ≈ √T tokens; a K×K matrix of gamma powers gives each
    block's local returns, a second (T/K)×(T/K) matrix of (gamma^K) powers carries the returns
    from block starts backwards, so only non-positive powers of gamma ever appear.
    """
    _check_gamma(gamma)
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be [B, T], got shape {tuple(rewards.shape)}")
    if gamma == 1.0:
        return rewards.flip(-1).cumsum(-1).flip(-1)
    batch, length = rewards.shape
    if length == 0:
        return rewards.clone()
    # The matmuls sum up to √T terms per output in one go; float64 keeps their rounding below a
    # float32 backwards loop's, so float32 callers match such a loop to ~1e-7.
    work = torch.promote_types(rewards.dtype, torch.float64)
    block = max(16, math.isqrt(length - 1) + 1)
    num_blocks = -(-length // block)
    padded = torch.nn.functional.pad(rewards.to(work), (0, num_blocks * block - length))
    local = padded.view(batch, num_blocks, block) @ _discount_matrix(block, gamma, work, rewards.device).T
    block_starts = local[..., 0] @ _discount_matrix(num_blocks, gamma**block, work, rewards.device).T
    carry_in = torch.nn.functional.pad(block_starts[:, 1:], (0, 1))
    steps = torch.arange(block, dtype=work, device=rewards.device)
    decay = torch.pow(torch.tensor(gamma, dtype=work, device=rewards.device), block - steps)
    out = local + carry_in.unsqueeze(-1) * decay
    return out.reshape(batch, num_blocks * block)[:, :length].to(rewards.dtype)


def _check_sample_values(sample_values: torch.Tensor, action_mask: torch.Tensor) -> None:
    if sample_values.dim() != 1 or action_mask.dim() != 2 or action_mask.shape[0] != sample_values.shape[0]:
        raise ValueError(
            f"expected sample_values [B] and action_mask [B, T], got {tuple(sample_values.shape)} "
            f"and {tuple(action_mask.shape)}"
        )


def _last_action_index(action_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last action token (0 for a row without any, whose reward is masked out)."""
    positions = torch.arange(1, action_mask.shape[-1] + 1, device=action_mask.device)
    return (action_mask.long() * positions).argmax(-1)


def token_rewards(
    sample_values: torch.Tensor,
    action_mask: torch.Tensor,
    kl: torch.Tensor | None = None,
    *,
    kl_coef: float = 0.0,
    reward_clip_range: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Per-token rewards [B, T]: the (clipped) outcome value on the last action token, −kl_coef·KL_t
    on every token, 0 off the action mask (REINFORCE++ Eq. 8; OpenRLHF's ``compute_reward``).

    A negative ``kl_coef`` counts as 0, and the clip applies to ``sample_values`` (the baselined
    outcome value), both as in OpenRLHF 0.11.2.
    """
    _check_sample_values(sample_values, action_mask)
    values = sample_values
    if reward_clip_range is not None:
        low, high = reward_clip_range
        values = values.clamp(min=low, max=high)
    if kl is not None and kl_coef > 0.0:
        if kl.shape != action_mask.shape:
            raise ValueError(f"kl shape {tuple(kl.shape)} != action_mask shape {tuple(action_mask.shape)}")
        rewards = kl * -kl_coef
    else:
        dtype = kl.dtype if kl is not None else values.dtype
        rewards = torch.zeros(action_mask.shape, dtype=dtype, device=action_mask.device)
    rewards.scatter_add_(-1, _last_action_index(action_mask).unsqueeze(-1), values.to(rewards.dtype).unsqueeze(-1))
    return rewards.mul_(action_mask)


def token_returns(
    sample_values: torch.Tensor,
    action_mask: torch.Tensor,
    kl: torch.Tensor | None = None,
    *,
    kl_coef: float = 0.0,
    gamma: float = 1.0,
    reward_clip_range: tuple[float, float] | None = None,
) -> torch.Tensor:
    """Returns-to-go [B, T] of :func:`token_rewards` with discount ``gamma`` (REINFORCE++ Eq. 9)."""
    rewards = token_rewards(sample_values, action_mask, kl, kl_coef=kl_coef, reward_clip_range=reward_clip_range)
    return discounted_returns(rewards, gamma)


def broadcast_to_tokens(sample_values: torch.Tensor, action_mask: torch.Tensor) -> torch.Tensor:
    """Each response's scalar on every one of its action tokens, 0 elsewhere: the token advantages of
    the grid's presets (KL 0, gamma 1), equal to :func:`token_returns` on the action tokens."""
    _check_sample_values(sample_values, action_mask)
    return sample_values.unsqueeze(-1) * action_mask


def whiten_token_advantages(
    advantages: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor],
    *,
    sample_weighted: bool = False,
    scale: bool = True,
) -> list[torch.Tensor]:
    """Global whitening of token advantages over several micro-batches (REINFORCE++ Eq. 10).

    mean and population variance are taken over every masked token of every micro-batch
    (``sample_weighted``: each token weighs 1/L so each response counts once), then
    A ← (A − mean) · var.clamp(min=1e-8)^(−1/2) on masked tokens, 0 elsewhere. ``scale=False``
    subtracts the mean only (OpenRLHF's ``--algo.advantage.no_std_norm``). The sums are
    accumulated per micro-batch, never over a concatenated copy of the rollout.
    """
    if len(advantages) != len(masks):
        raise ValueError(f"{len(advantages)} advantage tensors but {len(masks)} masks")
    for adv, mask in zip(advantages, masks, strict=True):
        if adv.shape != mask.shape:
            raise ValueError(f"advantages shape {tuple(adv.shape)} != mask shape {tuple(mask.shape)}")

    def weighted_sum(values_of: Callable[[torch.Tensor], torch.Tensor]) -> float:
        # weights are rebuilt per micro-batch so no rollout-sized copy of the masks is ever held
        total = 0.0
        for adv, mask in zip(advantages, masks, strict=True):
            weight = mask.to(adv.dtype)
            if sample_weighted:
                weight = weight / weight.sum(-1, keepdim=True).clamp(min=1)
            total += float((values_of(adv) * weight).sum(dtype=torch.float64))
        return total

    if sample_weighted:
        count = float(sum(int((mask.sum(-1) > 0).sum()) for mask in masks))
    else:
        count = float(sum(int(mask.sum()) for mask in masks))
    if count == 0.0:
        return [torch.zeros_like(adv) for adv in advantages]
    mean = weighted_sum(lambda adv: adv) / count
    rstd = 1.0
    if scale:
        var = weighted_sum(lambda adv: (adv - mean).square_()) / count
        rstd = max(var, WHITEN_MIN_VAR) ** -0.5
    return [(adv - mean).mul_(rstd).mul_(mask) for adv, mask in zip(advantages, masks, strict=True)]


class TokenAdvantageResult(NamedTuple):
    """Output of :func:`compute_token_advantages`, one entry per micro-batch.

    Attributes:
        advantages: float [b, T]; 0 off the action mask and on dropped samples.
        returns: float [b, T] returns-to-go; 0 on dropped samples.
        keep: bool [b]; False for samples removed by ``filter`` / ``positive_only``.
        stats: the group metrics of :class:`~.advantages.AdvantageResult`.
    """

    advantages: list[torch.Tensor]
    returns: list[torch.Tensor]
    keep: list[torch.Tensor]
    stats: dict[str, float]


def _prompt_major_order(index: Sequence[Sequence[int]], sizes: list[int], n_samples_per_prompt: int) -> torch.Tensor:
    flat = torch.tensor([i for idx in index for i in idx], dtype=torch.long)
    if [len(idx) for idx in index] != sizes:
        raise ValueError(f"index lengths {[len(i) for i in index]} != micro-batch sizes {sizes}")
    total = flat.numel()
    if n_samples_per_prompt < 1 or total % n_samples_per_prompt:
        raise ValueError(f"{total} samples cannot form groups of n_samples_per_prompt={n_samples_per_prompt}")
    if not torch.equal(flat.sort().values, torch.arange(total)):
        raise ValueError("index must be a permutation of 0..N-1 (global sample ids, prompt-major)")
    return flat


def plan_groups(
    rewards: Sequence[torch.Tensor],
    action_mask: Sequence[torch.Tensor],
    index: Sequence[Sequence[int]],
    n_samples_per_prompt: int,
    config: AdvantageConfig | str,
) -> AdvantageResult:
    """The reward-only half of :func:`compute_token_advantages`: the grid's sample stage on the
    prompt-major [P, n] reward table, with whitening deferred to :func:`compose_token_advantages`.

    It needs no model output (only rewards and response lengths), so a rollout's keep decision and
    group statistics are known before the forward passes, and computed once.

    Args:
        rewards: per micro-batch (or per sample), float [b] outcome rewards.
        action_mask: per micro-batch, [b, T] mask of action tokens (the lengths of ``stats='token'``).
        index: per micro-batch, the global ids of its samples (sample ``s`` is response ``s % n`` of
            prompt ``s // n``, as in OpenRLHF's experience maker).
        n_samples_per_prompt: n.
        config: grid point or preset name.
    """
    config = resolve_config(config)
    if len(rewards) != len(action_mask):
        raise ValueError("rewards, action_mask (and kl) must hold the same number of micro-batches")
    order = _prompt_major_order(index, [int(r.numel()) for r in rewards], n_samples_per_prompt)
    flat_rewards = torch.cat([r.reshape(-1) for r in rewards])
    flat_lengths = torch.cat([m.sum(-1) for m in action_mask])
    table = torch.empty_like(flat_rewards)
    table[order] = flat_rewards
    lengths = torch.empty_like(flat_lengths)
    lengths[order] = flat_lengths
    sample_config = config.replace(std_scale="none") if config.std_scale == "whiten" else config
    return compute_advantage_result(
        table.view(-1, n_samples_per_prompt), sample_config, lengths.view(-1, n_samples_per_prompt)
    )


def compose_token_advantages(
    groups: AdvantageResult,
    action_mask: Sequence[torch.Tensor],
    index: Sequence[Sequence[int]],
    config: AdvantageConfig | str,
    *,
    kl: Sequence[torch.Tensor] | None = None,
    kl_coef: float = 0.0,
    gamma: float = 1.0,
    reward_clip_range: tuple[float, float] | None = None,
    whiten_std: bool = True,
) -> TokenAdvantageResult:
    """The token half of :func:`compute_token_advantages`, on the result of :func:`plan_groups`:
    outcome value at EOS plus −kl_coef·KL per token, returns-to-go with ``gamma``, then, for
    ``std_scale='whiten'``, whitening over the action tokens of the kept samples (so the KL terms are
    whitened too, as in REINFORCE++). ``action_mask`` / ``index`` / ``kl`` are the micro-batches after
    the forward passes; they may be grouped differently from the ones ``groups`` was planned on."""
    config = resolve_config(config)
    if kl is not None and len(kl) != len(action_mask):
        raise ValueError("rewards, action_mask (and kl) must hold the same number of micro-batches")
    num_prompts, n = groups.keep.shape
    sizes = [int(m.shape[0]) for m in action_mask]
    order = _prompt_major_order(index, sizes, n)
    if order.numel() != num_prompts * n:
        raise ValueError(f"{order.numel()} samples, but the group plan covers {num_prompts * n}")
    values = groups.advantages.reshape(-1)[order].split(sizes)
    keeps = groups.keep.reshape(-1)[order].split(sizes)

    returns, advantages, masks = [], [], []
    for k, (value, keep, mask) in enumerate(zip(values, keeps, action_mask, strict=True)):
        ret = token_returns(
            value,
            mask,
            None if kl is None else kl[k],
            kl_coef=kl_coef,
            gamma=gamma,
            reward_clip_range=reward_clip_range,
        )
        kept_mask = mask
        if not keep.all():
            ret.mul_(keep.unsqueeze(-1))
            kept_mask = mask * keep.unsqueeze(-1)
        returns.append(ret)
        advantages.append(ret * kept_mask)
        masks.append(kept_mask)
    if config.std_scale == "whiten":
        advantages = whiten_token_advantages(
            advantages, masks, sample_weighted=config.stats == "sample", scale=whiten_std
        )
    return TokenAdvantageResult(advantages, returns, list(keeps), groups.stats)


def compute_token_advantages(
    rewards: Sequence[torch.Tensor],
    action_mask: Sequence[torch.Tensor],
    index: Sequence[Sequence[int]],
    n_samples_per_prompt: int,
    config: AdvantageConfig | str,
    *,
    kl: Sequence[torch.Tensor] | None = None,
    kl_coef: float = 0.0,
    gamma: float = 1.0,
    reward_clip_range: tuple[float, float] | None = None,
    whiten_std: bool = True,
) -> TokenAdvantageResult:
    """Token advantages and returns of a whole rollout, given as micro-batches (docs/algorithms.md §1-2):
    :func:`plan_groups` then :func:`compose_token_advantages`. The caller decides whether a preset
    honours gamma < 1 (:attr:`~.config.Preset.honours_gamma`).

    Args:
        rewards: per micro-batch, float [b] outcome rewards.
        action_mask: per micro-batch, [b, T] mask of action tokens.
        index: per micro-batch, the global ids of its samples.
        n_samples_per_prompt: n.
        config: grid point or preset name.
        kl: per micro-batch, [b, T] per-token KL estimates for the in-reward penalty.
        kl_coef: β of the in-reward penalty.
        gamma: discount in [0, 1].
        reward_clip_range: clip of the baselined outcome value (OpenRLHF ``--reward.clip_range``).
        whiten_std: divide by the std when whitening (False = OpenRLHF's ``no_std_norm``).
    """
    if kl is not None and len(kl) != len(rewards):
        raise ValueError("rewards, action_mask (and kl) must hold the same number of micro-batches")
    groups = plan_groups(rewards, action_mask, index, n_samples_per_prompt, config)
    return compose_token_advantages(
        groups, action_mask, index, config, kl=kl, kl_coef=kl_coef, gamma=gamma,
        reward_clip_range=reward_clip_range, whiten_std=whiten_std,
    )
