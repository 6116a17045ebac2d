"""Per-token policy losses and their aggregation over the global batch (docs/algorithms.md §5).

Aggregation follows OpenRLHF 0.11.2's global normalisation (``openrlhf/utils/loss_utils.py``):
every micro-batch of an optimizer step, on every data-parallel rank, receives the same
``batch_num_tokens`` (total action tokens of the step / gas) and ``global_batch_size`` (total
non-empty sequences / gas). The loss of a micro-batch is its partial sum divided by that global
normaliser and multiplied by ``dp_size``; DeepSpeed's 1/gas loss scaling and the gradient
averaging over ranks then turn the sum over micro-batches and ranks into one mean over the whole
step. The keyword names match OpenRLHF's ``loss_batch_info`` dict, so it can be passed as
``**loss_batch_info``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from openrlhf_ext.algorithms.config import LOSS_AGG_MODES, POLICY_LOSS_TYPES

LOG_RATIO_CLAMP = 20.0
"""|log π_θ − log π_old| is clamped before exp, as in OpenRLHF, so a stale token cannot overflow."""


class PolicyLossOutput(NamedTuple):
    """Per-token loss [B, T] (not yet aggregated) and the fraction of action tokens whose
    objective was clipped (ratio clip or dual clip: the token gives no gradient)."""

    loss: torch.Tensor
    clip_fraction: torch.Tensor


def _masked_fraction(flags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask_f = mask.to(torch.float32)
    return (flags.to(torch.float32) * mask_f).sum() / mask_f.sum().clamp(min=1)


def policy_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    advantages: torch.Tensor,
    action_mask: torch.Tensor,
    *,
    loss_type: str = "ppo",
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip: float | None = None,
) -> PolicyLossOutput:
    """Per-token policy loss (docs/algorithms.md §5).

    ``ppo``: −min(ρ·A, clip(ρ, 1 − eps_low, 1 + eps_high)·A) with ρ = π_θ/π_old (clip-higher
    when eps_high > eps_low, DAPO); with ``dual_clip`` = c > 1, tokens with A < 0 take
    max(that, c·A) (dual-clip PPO, arXiv:1912.09729). RAFT++ (arXiv:2504.11343 Eq. 8) is this loss.
    ``vanilla``: −A·log π_θ, no ratio and no clip (RAFT, arXiv:2504.11343 Eq. 1); its clip fraction is 0.

    The clip fraction counts tokens taken from a clipped branch; with ``dual_clip=None`` it is
    OpenRLHF's ``clip_ratio``.
    """
    if loss_type not in POLICY_LOSS_TYPES:
        raise ValueError(f"policy loss type {loss_type!r} is not valid; choose one of {', '.join(POLICY_LOSS_TYPES)}")
    if not (0.0 <= eps_low < 1.0 and eps_high >= 0.0):
        raise ValueError(f"need 0 <= eps_low < 1 and eps_high >= 0, got eps_low={eps_low}, eps_high={eps_high}")
    if dual_clip is not None and not dual_clip > 1.0:
        raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
    if loss_type == "vanilla":
        loss = -advantages * log_probs
        return PolicyLossOutput(loss, torch.zeros((), dtype=torch.float32, device=loss.device))

    ratio = (log_probs - old_log_probs).clamp(min=-LOG_RATIO_CLAMP, max=LOG_RATIO_CLAMP).exp()
    surr = ratio * advantages
    surr_clipped = ratio.clamp(1.0 - eps_low, 1.0 + eps_high) * advantages
    objective = torch.min(surr, surr_clipped)
    clipped = surr_clipped < surr
    if dual_clip is not None:
        floor = dual_clip * advantages
        dual_active = (advantages < 0) & (floor > objective)
        objective = torch.where(dual_active, floor, objective)
        clipped = clipped | dual_active
    return PolicyLossOutput(-objective, _masked_fraction(clipped.detach(), action_mask))


def aggregate_loss(
    loss: torch.Tensor,
    loss_mask: torch.Tensor,
    mode: str = "token-mean",
    *,
    dp_size: int = 1,
    batch_num_tokens: float | torch.Tensor | None = None,
    global_batch_size: float | torch.Tensor | None = None,
    max_tokens: int | None = None,
) -> torch.Tensor:
    """Reduce a per-token loss [B, T] to the scalar of one micro-batch (docs/algorithms.md §5).

    Modes (Σ over tokens counts masked tokens only; N_tok, N_seq are global totals):

    - ``token-mean``: Σ loss / N_tok (Lite PPO, arXiv:2508.08221; OpenRLHF ``token-mean``);
    - ``seq-mean-token-mean``: Σ_seq mean_t loss / N_seq (GRPO; OpenRLHF ``seq-mean-token-mean``);
    - ``seq-mean-token-sum``: Σ_seq Σ_t loss / N_seq;
    - ``seq-mean-token-sum-norm``: Σ loss / (N_seq · max_tokens) with a constant ``max_tokens``
      (default in training: ``max_new_tokens``), Dr. GRPO's unbiased form (arXiv:2503.20783 §3.2).

    With ``batch_num_tokens`` / ``global_batch_size`` (global, already divided by gas, as
    OpenRLHF's ``loss_batch_info`` carries them) the result is multiplied by ``dp_size``; without
    them the normaliser is this micro-batch's own count and ``dp_size`` is not applied, as in
    OpenRLHF. Sequences without any masked token count in no N_seq.
    """
    if mode not in LOSS_AGG_MODES:
        raise ValueError(f"loss aggregation mode {mode!r} is not valid; choose one of {', '.join(LOSS_AGG_MODES)}")
    if loss.shape != loss_mask.shape:
        raise ValueError(f"loss shape {tuple(loss.shape)} != loss_mask shape {tuple(loss_mask.shape)}")
    mask = loss_mask.to(loss.dtype)
    token_sums = (loss * mask).sum(-1)
    if mode == "token-mean":
        numerator, normaliser = token_sums.sum(), batch_num_tokens
        local = mask.sum()
    else:
        counts = mask.sum(-1)
        if mode == "seq-mean-token-mean":
            numerator = (token_sums / counts.clamp(min=1)).sum()
        elif mode == "seq-mean-token-sum":
            numerator = token_sums.sum()
        else:
            if max_tokens is None or max_tokens <= 0:
                raise ValueError("seq-mean-token-sum-norm needs a positive max_tokens (the generation budget)")
            numerator = token_sums.sum() / max_tokens
        normaliser = global_batch_size
        local = (counts > 0).sum()
    if normaliser is None:
        return numerator / local.clamp(min=1)
    return numerator / normaliser * dp_size
