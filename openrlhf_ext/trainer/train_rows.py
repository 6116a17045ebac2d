"""Rows that cannot change the gradient never enter a training forward or backward pass.

After a filter (or ``positive_only``) the rollout still holds rows that contribute nothing to the
gradient: rows with no token in the loss (``--ext.dropped_rows exclude``, overlong-filtered rows; see
:mod:`openrlhf_ext.trainer.experience_maker`) and, when the policy term is the only loss term, rows
whose advantages are all zero (``zero_advantage``, the Minimal-RL authors' setting: the PPO / GSPO
terms are ``A * f(ratio)``). Stock OpenRLHF would still run them through the policy's forward and
backward at full length. Here they are taken out of each training micro-batch after it is drawn,
and everything else of the stock training loop stays as it is:

* the replay buffer's items, the DataLoader's shuffle and its micro-batches are stock's, so every
  data-parallel rank makes the same number of forward/backward calls (ZeRO-3 gathers parameters
  collectively in each), and DeepSpeed's gradient-accumulation boundaries and the optimizer steps
  per rollout are unchanged;
* a micro-batch whose rows are all skipped trains one 2-token :func:`stub_row` with no action token
  instead (loss and gradient exactly 0);
* the loss normalisers of an optimizer step (global action tokens and sequences, which the skipped
  zero-advantage rows count in) come from :attr:`LOSS_NORM_MASK`, the action masks of every row the
  micro-batch drew (:func:`normalising_over_drawn_rows`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import fields
from typing import Any

import torch
from openrlhf.trainer.ppo_utils.experience import Experience, make_experience_batch
from openrlhf.trainer.ppo_utils.replay_buffer import NaiveReplayBuffer
from openrlhf.utils.utils import zero_pad_sequences

LOSS_NORM_MASK = "loss_norm_mask"
"""Attribute of a collated micro-batch: bool [drawn rows, A], the action masks of every row it drew,
skipped ones included (what stock normalises the loss over)."""

_TOKEN_FIELDS = ("sequences", "attention_mask")  # per-token [T]; the other per-step fields are per-action [A]


def cannot_change_gradient(row: Experience, policy_term_only: bool) -> bool:
    """True when the row adds nothing to the gradient of the loss (``row`` is one sample).

    Args:
        row: one replay-buffer item (per-step fields 1-D).
        policy_term_only: no loss term but the policy term reads the rows (no KL loss with a positive
            coefficient, no entropy bonus, no auxiliary loss).
    """
    mask = row.action_mask.bool()
    if not mask.any():
        return True
    return policy_term_only and row.advantages is not None and not bool((row.advantages[mask] != 0).any())


def stub_row(row: Experience) -> Experience:
    """A 2-token row (``row``: one sample, per-step fields ``[T]`` or ``[1, T]``) with no action token (zero loss, zero gradient) that keeps the forward/backward
    call of a micro-batch whose rows were all skipped. Its tokens are the last two of ``row`` (real
    tokens, fully attended: a fully masked row could make attention NaN, and 0 x NaN is NaN)."""
    values: dict[str, Any] = {}
    for f in fields(Experience):
        value = getattr(row, f.name)
        if not (isinstance(value, torch.Tensor) and Experience.is_step_tensor_field(f.name)):
            values[f.name] = value
        elif f.name == "sequences":
            values[f.name] = value[..., -2:]
        elif f.name == "attention_mask":
            values[f.name] = torch.ones_like(value[..., -2:])
        else:
            values[f.name] = torch.zeros_like(value[..., -1:])
    return Experience(**values)


class SkippingReplayBuffer(NaiveReplayBuffer):
    """OpenRLHF's replay buffer whose micro-batches leave out the rows :func:`cannot_change_gradient`.

    ``rows_skipped`` counts the rows left out since it was last reset.
    """

    def __init__(self, *args, policy_term_only: bool, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.policy_term_only = policy_term_only
        self.rows_skipped = 0

    @classmethod
    def like(cls, stock: NaiveReplayBuffer, *, policy_term_only: bool) -> SkippingReplayBuffer:
        """An empty buffer with the settings of the stock trainer's ``stock`` buffer."""
        return cls(stock.sample_batch_size, stock.limit, stock.cpu_offload, stock.packing_samples,
                   stock.dynamic_batch, policy_term_only=policy_term_only)

    def collate_fn(self, batch) -> Experience:
        drawn: list[Experience] = batch[0] if self.dynamic_batch else batch
        trained = [row for row in drawn if not cannot_change_gradient(row, self.policy_term_only)]
        self.rows_skipped += len(drawn) - len(trained)
        experience = make_experience_batch(trained or [stub_row(drawn[0])], self.packing_samples)
        setattr(experience, LOSS_NORM_MASK, zero_pad_sequences([row.action_mask for row in drawn], "right", stack=True))
        return experience


def normalising_over_drawn_rows(iter_grad_accum_global_norm: Callable[..., Iterator]) -> Callable[..., Iterator]:
    """Stock ``iter_grad_accum_global_norm`` (the policy worker's reach of :data:`openrlhf_ext.reaches.REACHES`)
    fed the :data:`LOSS_NORM_MASK` of each micro-batch that has one, so that the loss normalisers are those
    of the rows drawn, as in stock, not only of the rows trained."""

    def iterate(data_iter: Iterable, strategy, accumulated_gradient: int,
                mask_fn: Callable[[Experience], torch.Tensor]) -> Iterator:
        def drawn_mask(experience: Experience) -> torch.Tensor:
            mask = getattr(experience, LOSS_NORM_MASK, None)
            return mask_fn(experience) if mask is None else mask

        return iter_grad_accum_global_norm(data_iter, strategy, accumulated_gradient, drawn_mask)

    return iterate
