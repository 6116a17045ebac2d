"""``ExtExperienceMaker``: OpenRLHF's experience maker with the advantage grid of docs/algorithms.md §1.

For every critic-free estimator (the stock names included) the advantages and returns come from
the grid of :mod:`openrlhf_ext.algorithms`, configured by ``args.ext_config`` (the CLI's resolved
:class:`~openrlhf_ext.algorithms.ExtConfig`); ``gae`` keeps the stock path. The grid runs in two
halves: :meth:`ExtExperienceMaker.plan_rollout` takes the reward-only half once per rollout, before
any forward pass (:class:`RolloutPlan`: the group statistics, the keep decision, the row plan), and
the token half (KL in the reward, returns, whitening) reuses it after the forward passes.

Filtering. With a rule-based reward the rewards arrive with the rollout, so the samples a filter
(or ``positive_only``) drops are known before any model runs. How they enter the loss is
``--ext.dropped_rows`` (:func:`row_plan`):

* ``exclude``: *masked rows* (action mask all zero, advantage 0): nothing in the loss nor in the
  global token / sequence counts that normalise it;
* ``zero_advantage`` (the Minimal-RL authors' code): the rows keep their action mask with advantage
  0, so they count in the normalisers and in the KL loss (and the entropy term).

A row skips the actor, reference and critic forward passes whenever no loss term can use them:
always when excluded, and when kept with advantage 0 unless a KL loss needs its reference
log-probs. Its old log-probs are then :data:`~.policy_loss.SKIPPED_LOG_PROB` (ratio 1 in the loss).
Every row still goes to the policy's replay buffer, so every data-parallel rank receives the same
number of samples as without filtering; the training forward/backward then leaves out the rows that
cannot change the gradient (:mod:`openrlhf_ext.trainer.train_rows`).

Overlong filtering (``--ext.overlong_filter``, Tricks or Traps, arXiv:2508.08221): truncated responses
(finish reason ``length``) are masked out of the loss like excluded rows, after the advantages are
computed (they still count in the group statistics); the number is logged as ``overlong_masked``.

A batch with no row left in the loss is reported through :attr:`RolloutPlan.all_filtered`; the
trainer then skips the optimizer step.

The saved policy forward. When the policy takes no optimizer step between generating a rollout and
training on it (:func:`saves_policy_forward`: one epoch, one optimizer step per rollout, not async),
the weights of the training forward are those that produced the experience and the importance ratio is
exactly 1: the policy's experience-making forward is not dispatched, every row's old log-probs are
:data:`~.policy_loss.SKIPPED_LOG_PROB` and the loss takes the training forward's, detached, as TRL does
for a single iteration. The reference and critic forwards still run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from openrlhf.trainer.ppo_utils.experience import Experience, make_experience_batch, split_experience_batch
from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker
from openrlhf.trainer.ppo_utils.length_penalty import apply_length_penalties
from openrlhf.utils.logging_utils import init_logger

from openrlhf_ext.algorithms import AdvantageResult, compose_token_advantages, plan_groups
from openrlhf_ext.trainer.metrics import rollout_metrics
from openrlhf_ext.trainer.policy_loss import SKIPPED_LOG_PROB
from openrlhf_ext.trainer.train_rows import stub_row

logger = init_logger(__name__)


def row_plan(
    keep: torch.Tensor, truncated: torch.Tensor, dropped_rows: str, kl_loss: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Which rows enter the loss and which need the rollout forward passes; bool [N] each.

    Args:
        keep: the advantage stage kept the row (False: dropped by a filter / ``positive_only``).
        truncated: the row is masked out by overlong filtering.
        dropped_rows: ``exclude`` or ``zero_advantage`` (see the module docstring).
        kl_loss: a KL loss with a positive coefficient is active (it reads the reference log-probs).
    """
    in_loss = (keep if dropped_rows == "exclude" else torch.ones_like(keep)) & ~truncated
    forward = in_loss if kl_loss else keep & in_loss
    return in_loss, forward


def saves_policy_forward(args) -> tuple[bool, str]:
    """Whether experience making skips the policy's forward pass (module docstring), and why (one line).

    The old log-probs then come from the training forward, detached: exact only when no optimizer step
    separates the weights that generated a rollout from those that train on it, and when nothing reads
    the policy's log-probs before its training forward. ``args``: OpenRLHF's nested training arguments.
    """
    train, kl = args.train, args.algo.kl
    rollout_rows = args.rollout.batch_size * args.rollout.n_samples_per_prompt
    if train.async_enable:
        return False, "--train.async_enable: the policy trains while the next rollout is generated"
    if train.max_epochs > 1:
        return False, f"--train.max_epochs {train.max_epochs}: epochs after the first train on updated weights"
    if rollout_rows != train.batch_size:
        return False, (f"--rollout.batch_size x --rollout.n_samples_per_prompt = {rollout_rows} samples per rollout, "
                       f"--train.batch_size {train.batch_size}: not one optimizer step per rollout")
    if kl.init_coef > 0 and not kl.use_loss:
        return False, ("KL in the reward (--algo.kl.init_coef > 0 without --algo.kl.use_loss) is computed from the "
                       "policy's log-probs before training")
    if kl.init_coef > 0 and kl.unbiased_gradient:
        return False, ("--algo.kl.unbiased_gradient: the KL loss weighs its gradient by the old log-probs, read "
                       "outside the policy loss")
    return True, ("one epoch, one optimizer step per rollout: the old log-probs are the training forward's, "
                  "detached (ratio 1)")


def within_one_optimizer_step(rows_before: int, rows: int, train_batch_size: int) -> bool:
    """No optimizer-step boundary falls inside a rollout of ``rows`` rows trained after ``rows_before``
    rows: DeepSpeed steps after every ``train_batch_size`` rows, counted over the run, so a rollout shorter
    than a training batch (the last prompts of an episode, dynamic filtering running out of prompts) moves
    the boundaries into the rollouts after it."""
    return rows_before % train_batch_size + rows <= train_batch_size


def truncated_rows(items: list[Experience], max_new_tokens: int | None) -> torch.Tensor:
    """bool [N]: generation stopped on the length limit (vLLM's finish reason ``length``). Where the
    generator did not record it, a response that filled ``max_new_tokens`` counts as truncated."""
    flags = []
    for item in items:
        if item.truncated is not None:
            flags.append(item.truncated.reshape(-1).bool())
        elif max_new_tokens:
            flags.append(item.action_mask.sum(-1) >= max_new_tokens)
        else:
            flags.append(torch.zeros(item.action_mask.shape[0], dtype=torch.bool))
    return torch.cat(flags)


@dataclass(frozen=True)
class RolloutPlan:
    """What a rollout's rewards decide, once, before any forward pass (tensors by global sample id).

    Attributes:
        groups: the grid's reward-only stage (:func:`~openrlhf_ext.algorithms.plan_groups`): sample
            values, keep decision and group statistics, prompt-major [P, n].
        in_loss: bool [N], the row enters the loss (:func:`row_plan`).
        forward: bool [N], the row needs the rollout forward passes.
        truncated: bool [N], masked out by overlong filtering.
    """

    groups: AdvantageResult
    in_loss: torch.Tensor
    forward: torch.Tensor
    truncated: torch.Tensor

    @property
    def all_filtered(self) -> bool:
        """No row is left in the loss: the trainer skips the optimizer step."""
        return not bool(self.in_loss.any())


class PlannedRollout(list):
    """Rollout samples with their :class:`RolloutPlan` (None: nothing to plan, see
    :meth:`ExtExperienceMaker.plan_rollout`). The controller plans a rollout once and hands it to stock
    ``train_step`` in this form, which passes it on to :meth:`ExtExperienceMaker.make_experience_batch`."""

    def __init__(self, samples: list[Experience], plan: RolloutPlan | None) -> None:
        super().__init__(samples)
        self.plan = plan


class ExtExperienceMaker(RemoteExperienceMaker):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.ext_config = self.args.ext_config  # resolved once by the CLI
        self.grid = self.ext_config.advantage
        self.last_metrics: dict[str, float] = {}
        self.saves_policy_forward, reason = saves_policy_forward(self.args)
        logger.info(f"policy forward of experience making: {'saved' if self.saves_policy_forward else 'runs'} ({reason})")
        self._policy_forward_saved = False  # for the rollout being made
        self._rows_made = 0  # rollout rows handed to training so far, where DeepSpeed's accumulation windows fall

    # -- filtering decision --------------------------------------------------------------------

    def plan_rollout(self, rollout_samples: list[Experience]) -> RolloutPlan | None:
        """Number the samples, apply length penalties and plan the rollout (call once per rollout:
        the penalties change the rewards).

        Returns None when the rewards are not known yet (a reward *model* scores them during
        make_experience) or the estimator is ``gae``.
        """
        if self.grid is None or any(s.rewards is None for s in rollout_samples):
            return None
        for i, sample in enumerate(rollout_samples):
            sample.index = [i]  # global ids, carried into the masked rows
        self._shape_rewards(rollout_samples)
        return self._plan(rollout_samples)

    def _plan(self, items: list[Experience]) -> RolloutPlan:
        """The group stage and :func:`row_plan` of these rows (rewards shaped, ``index`` set)."""
        args, config = self.args, self.ext_config
        index = [list(item.index) for item in items]
        groups = plan_groups([item.rewards for item in items], [item.action_mask for item in items], index,
                             args.rollout.n_samples_per_prompt, self.grid)
        ids = torch.tensor([i for idx in index for i in idx], dtype=torch.long)
        truncated = torch.zeros(ids.numel(), dtype=torch.bool)
        if config.overlong_filter:
            truncated[ids] = truncated_rows(items, args.rollout.max_new_tokens)
        kl_loss = args.algo.kl.use_loss and args.algo.kl.init_coef > 0
        in_loss, forward = row_plan(groups.keep.reshape(-1), truncated, config.dropped_rows, kl_loss)
        return RolloutPlan(groups, in_loss, forward, truncated)

    def batch_metrics(self, experiences: list[Experience]) -> dict[str, float]:
        """Reward mean and response lengths (overall, correct, wrong) of a rollout (docs/algorithms.md, "Metrics")."""
        rewards = torch.cat([e.rewards.reshape(-1) for e in experiences])
        lengths = torch.cat([e.response_length.reshape(-1) for e in experiences])
        return rollout_metrics(rewards, lengths, self.grid.correct_threshold)

    # -- experience making ---------------------------------------------------------------------

    @torch.no_grad()
    def make_experience_batch(self, rollout_samples: list[Experience]) -> list[Experience]:
        """Stock entry point. A :class:`PlannedRollout` brings its plan; other samples are planned here."""
        rows = sum(len(sample.sequences) for sample in rollout_samples)
        self._policy_forward_saved = self.saves_policy_forward and within_one_optimizer_step(
            self._rows_made, rows, self.args.train.batch_size)
        self._rows_made += rows
        if isinstance(rollout_samples, PlannedRollout):
            plan = rollout_samples.plan
        else:
            plan = self.plan_rollout(rollout_samples)
        if plan is None:  # gae, or rewards from a reward model: every sample goes through the forwards
            experiences = super().make_experience_batch(rollout_samples)
        else:
            forward_ids = plan.forward.nonzero().flatten().tolist()
            skipped_ids = (~plan.forward).nonzero().flatten().tolist()
            experiences = self._forward_kept(rollout_samples, forward_ids)
            experiences += self._masked_rows([rollout_samples[i] for i in skipped_ids])
            self._grid_advantages(experiences, plan)
            self.last_metrics["forward_skipped_fraction"] = len(skipped_ids) / len(rollout_samples)
            experiences = self._deal_to_ranks(experiences, len(rollout_samples))
        self.last_metrics["policy_forward_saved"] = float(self._policy_forward_saved)
        return experiences

    def _dispatch_forward(self, group, sync_condition, **kwargs):
        """Stock's dispatch of a model's forward passes; the policy's, when saved, gives NaN old log-probs
        at once (stock ``make_experience`` takes them as it takes the forward's results)."""
        if group is self.actor_model_group and self._policy_forward_saved:
            return _SavedLogProbs(torch.full(mask.shape, SKIPPED_LOG_PROB) for mask in kwargs["action_mask"])
        return super()._dispatch_forward(group, sync_condition, **kwargs)

    def _flatten_results(self, refs, duplicate_factor):
        if isinstance(refs, _SavedLogProbs):
            return list(refs)
        return super()._flatten_results(refs, duplicate_factor)

    def _forward_kept(self, rollout_samples: list[Experience], kept_ids: list[int]) -> list[Experience]:
        """The rollout forward passes of the kept rows. Each model's data-parallel ranks get the same number
        of micro-batches (ZeRO-3 gathers parameters collectively in every forward): the micro-batches are
        padded with 2-token stub rows, whose outputs are dropped."""
        if not kept_ids:
            return []
        kept = [rollout_samples[i] for i in kept_ids]
        ranks = math.lcm(*(_data_parallel_ranks(group) for group in
                           (self.actor_model_group, self.critic_model_group, self.initial_model_group) if group))
        if self.args.train.dynamic_batch_enable and len(kept) < ranks:
            # Stock's dynamic split makes at least one micro-batch per rank and asserts a row for each.
            micro_batches = [Experience.concat_experiences([row], self.tokenizer.pad_token_id) for row in kept]
            for position, batch in enumerate(micro_batches):
                batch.index = [position]
        else:
            micro_batches = self.split_rollout_samples(kept)  # numbers .index over `kept`
        for batch in micro_batches:
            batch.index = [kept_ids[i] for i in batch.index]
        stubs = -len(micro_batches) % ranks
        micro_batches += [stub_row(kept[0]) for _ in range(stubs)]
        for stub in micro_batches[len(micro_batches) - stubs:]:
            stub.index = [_STUB_INDEX]
        return [e for e in self.make_experience(micro_batches) if e.index != [_STUB_INDEX]]

    def _deal_to_ranks(self, experiences: list[Experience], num_rows: int) -> list[Experience]:
        """Stock's micro-batches for the policy's replay buffers: ``micro_batch_size`` rows each, as many as
        stock makes, so that every data-parallel rank receives as many rows as in stock (then the same number
        of training micro-batches). The rows in the loss are spread evenly over the ranks."""
        size = self.args.rollout.micro_batch_size
        ranks = _data_parallel_ranks(self.actor_model_group)
        rows = []
        for experience in experiences:
            ids = experience.index  # split_experience_batch drops it
            for sample_id, row in zip(ids, split_experience_batch(experience), strict=True):
                row.index = [sample_id]
                rows.append(row)
        assert len(rows) == num_rows, f"{len(rows)} rows made of a rollout of {num_rows}"
        rows.sort(key=lambda row: not bool(row.action_mask.any()))  # stable: rows in the loss first
        starts = range(0, num_rows, size)
        per_rank = math.ceil(len(starts) / ranks)  # micro-batches per rank, as async_run_method_batch chunks them
        slots: dict[int, list[int]] = {}  # rank -> the row positions it receives
        for position in range(num_rows):
            slots.setdefault(position // size // per_rank, []).append(position)
        placed: list[Experience | None] = [None] * num_rows
        for row in rows:
            rank = max(slots, key=lambda r: (len(slots[r]), -r))  # the rank with the most free positions
            placed[slots[rank].pop(0)] = row
        return [_batch(placed[start : start + size]) for start in starts]

    def _masked_rows(self, dropped: list[Experience]) -> list[Experience]:
        """Samples that skip every forward pass, as micro-batches filled with zeros. Their old log-probs
        are :data:`SKIPPED_LOG_PROB` (only zero-advantage rows keep an action mask to use them)."""
        size = self.args.rollout.micro_batch_size
        # The fields the forwarded rows have (stock make_experience): stock batching takes the first
        # row's field type, so a micro-batch mixing both kinds must not mix None and tensors.
        with_reference = self.args.algo.kl.use_loss and self.initial_model_group is not None
        rows = []
        for start in range(0, len(dropped), size):
            batch = Experience.concat_experiences(dropped[start : start + size], self.tokenizer.pad_token_id)
            zeros = torch.zeros(batch.action_mask.shape, dtype=torch.float32)
            batch.action_log_probs = torch.full_like(zeros, SKIPPED_LOG_PROB)
            batch.base_action_log_probs = zeros.clone() if with_reference else None
            batch.values = zeros.clone() if self.critic_model_group is not None else None
            batch.kl = zeros.clone()
            batch.info["kl"] = torch.zeros(zeros.shape[0])
            batch.info["logprobs_diff"] = torch.zeros(zeros.shape[0])
            rows.append(batch)
        return rows

    # -- advantages ----------------------------------------------------------------------------

    @torch.no_grad()
    def compute_advantages_and_returns(self, experiences: list[Experience]) -> list[Experience]:
        """Stock entry point (rewards not yet shaped): length penalties, then the grid."""
        if self.grid is None:
            return super().compute_advantages_and_returns(experiences)
        self._shape_rewards(experiences)
        self._grid_advantages(experiences, self._plan(experiences))
        self.last_metrics["forward_skipped_fraction"] = 0.0
        return experiences

    def _shape_rewards(self, items: list[Experience]) -> None:
        """Stock's first two steps: rewards in at least float32, then OpenRLHF's length penalties."""
        for item in items:
            item.rewards = item.rewards.to(torch.promote_types(item.rewards.dtype, torch.float32))
        apply_length_penalties(items, self.args)

    def _grid_advantages(self, experiences: list[Experience], plan: RolloutPlan) -> None:
        """The token half of the grid (KL in the reward, returns, whitening) on the planned group stage."""
        if not experiences:
            return
        args = self.args
        result = compose_token_advantages(
            plan.groups,
            [e.action_mask for e in experiences],
            [e.index for e in experiences],
            self.grid,
            kl=[e.kl for e in experiences],
            kl_coef=self.kl_ctl.value,
            gamma=self.ext_config.gamma,
            reward_clip_range=tuple(args.reward.clip_range),
            whiten_std=not args.algo.advantage.no_std_norm,
        )
        self.last_metrics = {**result.stats, **self.batch_metrics(experiences),
                             "overlong_masked": int(plan.truncated.sum())}
        for exp, adv, ret in zip(experiences, result.advantages, result.returns, strict=True):
            rows = plan.in_loss[torch.tensor(exp.index, dtype=torch.long)]

            exp.advantages = adv
            exp.returns = ret
            # Rows out of the loss become masked rows: no loss, no token or sequence count.
            exp.action_mask = exp.action_mask * rows.unsqueeze(-1).to(exp.action_mask.dtype)
            exp.info["return"] = (ret * exp.action_mask).sum(-1) / exp.action_mask.sum(-1).clamp(min=1)
            exp.kl = None


_STUB_INDEX = -1  # marks a forward pass's padding micro-batch


class _SavedLogProbs(list):
    """The policy's per-micro-batch old log-probs when its forward is saved, in place of the Ray results."""


def _batch(rows: list[Experience]) -> Experience:
    """OpenRLHF's batching of single rows, with the per-sample ``info`` values as tensors again (it leaves
    them as lists of 0-d tensors, which its trainer's rollout statistics cannot concatenate)."""
    batch = make_experience_batch(rows)
    batch.info = {key: torch.stack(value) if value and isinstance(value[0], torch.Tensor) else value
                  for key, value in batch.info.items()}
    return batch


def _data_parallel_ranks(group) -> int:
    """Ranks of an OpenRLHF actor group that receive distinct data (ring-attention / tensor-parallel peers
    share theirs): how its ``async_run_method_batch`` splits a batch (stock keeps both counts private)."""
    return len(group._actor_handlers) // group.duplicate_actors
