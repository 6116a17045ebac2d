"""``ExtPolicyLoss``: OpenRLHF's ``PolicyLoss`` with the ``vanilla`` loss and two more aggregations.

Stock settings (``ppo``/``gspo`` with ``token-mean``/``seq-mean-token-mean``) run the stock code
unchanged. ``vanilla`` (RAFT, arXiv:2504.11343 Eq. 1) and the ``seq-mean-token-sum`` /
``seq-mean-token-sum-norm`` aggregations (docs/algorithms.md §5) run :func:`openrlhf_ext.algorithms.policy_loss`
and :func:`openrlhf_ext.algorithms.aggregate_loss`, with the same global normalisers
(``dp_size``, ``batch_num_tokens``, ``global_batch_size``) that OpenRLHF's actor passes in.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from openrlhf.models import PolicyLoss

from openrlhf_ext.algorithms import aggregate_loss, policy_loss
from openrlhf_ext.algorithms.config import is_stock_loss

SKIPPED_LOG_PROB = float("nan")
"""Old log-prob of a row whose policy forward of experience making did not run: the loss then takes the
current log-prob, detached (ratio 1). A zero-advantage row that skipped the rollout forward passes adds
0 to the policy loss and nothing to ppo_kl or the clip fraction, while it still counts in the
normalisers. With the saved policy forward (:func:`~.experience_maker.saves_policy_forward`) every row
has it: the training forward runs on the weights that generated the rollout, so the current log-prob is
the old one and ppo_kl and the clip fraction are 0 by construction."""


class ExtPolicyLoss(PolicyLoss):
    def __init__(self, *, loss_agg_mode: str, max_tokens: int | None = None, **stock_kwargs) -> None:
        super().__init__(token_level_loss=loss_agg_mode == "token-mean", **stock_kwargs)
        self.loss_agg_mode = loss_agg_mode
        self.max_tokens = max_tokens
        self.uses_stock_path = is_stock_loss(self.policy_loss_type, loss_agg_mode)
        if self.policy_loss_type == "gspo" and not self.uses_stock_path:
            raise ValueError(f"--actor.loss_agg_mode {loss_agg_mode}: GSPO is sequence-level; use seq-mean-token-mean")
        if not self.uses_stock_path and self.is_correction_level != "off":
            raise ValueError(
                f"--algo.advantage.is_correction_level {self.is_correction_level}: the vLLM logprob correction runs "
                "only with the stock losses (ppo/gspo with token-mean/seq-mean-token-mean)"
            )

    @classmethod
    def from_args(cls, args: SimpleNamespace) -> ExtPolicyLoss:
        low, high = args.actor.eps_clip_low_high
        return cls(
            loss_agg_mode=args.actor.loss_agg_mode,
            max_tokens=args.ext_config.loss_norm_tokens,
            clip_eps_low=low,
            clip_eps_high=high,
            dual_clip=args.actor.dual_clip,
            policy_loss_type=args.actor.policy_loss_type,
            is_correction_level=args.algo.advantage.is_correction_level,
            is_correction_mode=args.algo.advantage.is_correction_mode,
            is_correction_gating=args.algo.advantage.is_correction_gating,
            is_correction_threshold=args.algo.advantage.is_correction_threshold,
        )

    def forward(
        self,
        log_probs: torch.Tensor,
        old_log_probs: torch.Tensor,
        advantages: torch.Tensor,
        action_mask: torch.Tensor | None = None,
        rollout_log_probs: torch.Tensor | None = None,
        dp_size: int = 1,
        batch_num_tokens: float | None = None,
        global_batch_size: float | None = None,
    ):
        old_log_probs = torch.where(torch.isnan(old_log_probs), log_probs.detach(), old_log_probs)
        if self.uses_stock_path:
            return super().forward(
                log_probs, old_log_probs, advantages, action_mask, rollout_log_probs,
                dp_size, batch_num_tokens, global_batch_size,
            )
        per_token = policy_loss(
            log_probs, old_log_probs, advantages, action_mask,
            loss_type=self.policy_loss_type, eps_low=self.clip_eps_low, eps_high=self.clip_eps_high,
            dual_clip=self.dual_clip,
        )
        loss = aggregate_loss(
            per_token.loss, action_mask, self.loss_agg_mode, dp_size=dp_size,
            batch_num_tokens=batch_num_tokens, global_batch_size=global_batch_size, max_tokens=self.max_tokens,
        )
        mask = action_mask.to(log_probs.dtype)
        ppo_kl = ((old_log_probs - log_probs).detach() * mask).sum() / mask.sum().clamp(min=1)
        # Same 5-tuple as the stock loss; no vLLM logprob correction on this path.
        return loss, per_token.clip_fraction, ppo_kl, None, None
