"""The experience maker and policy loss as they run inside the Ray workers, without Ray.

The experience maker is the real ``ExtExperienceMaker`` built from a real parsed configuration.
Only its model forward pass (``make_experience``, which calls the actor / reference Ray actors) is
replaced by a recorder that fills deterministic log-probs: the tests are about which samples reach
the forward pass and what the advantages, masks and metrics are, not about the models.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
from openrlhf.models import PolicyLoss
from openrlhf.trainer.ppo_utils.experience import Experience
from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker
from openrlhf.trainer.ppo_utils.kl_controller import FixedKLController

from openrlhf_ext.cli.train_config import resolve_train_config
from openrlhf_ext.trainer.experience_maker import ExtExperienceMaker, PlannedRollout, row_plan
from openrlhf_ext.trainer.policy_loss import ExtPolicyLoss


def parse(*flags: str):
    return resolve_train_config(["--pretrain", "/m", "--prompt_data", "/d.jsonl", "--remote_rm_url", "/r.py", *flags])


class Strategy:
    def __init__(self, args):
        self.args = args


class Tokenizer:
    pad_token_id = 0


def rollout(rewards: list[float], prompt_len: int = 3, seed: int = 0) -> list[Experience]:
    """Single-sample experiences as OpenRLHF's SamplesGenerator makes them (varying lengths)."""
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for reward in rewards:
        response_len = int(torch.randint(2, 7, (1,), generator=gen))
        total = prompt_len + response_len
        action_mask = torch.zeros(total - 1, dtype=torch.long)
        action_mask[prompt_len - 1 :] = 1
        samples.append(
            Experience(
                sequences=torch.randint(1, 50, (1, total), generator=gen),
                attention_mask=torch.ones(1, total, dtype=torch.long),
                action_mask=action_mask.unsqueeze(0),
                rewards=torch.tensor([reward]),
                response_length=torch.tensor([response_len]),
                total_length=torch.tensor([float(total)]),
                truncated=torch.tensor([False]),
                prompts=["p"],
                labels=["l"],
                info={"reward": torch.tensor([reward])},
            )
        )
    return samples


def actor_group(ranks: int) -> SimpleNamespace:
    """What the experience maker reads of OpenRLHF's RayActorGroup: its data-parallel ranks."""
    return SimpleNamespace(_actor_handlers=[None] * ranks, duplicate_actors=1)


class RecordingMaker(ExtExperienceMaker):
    """ExtExperienceMaker whose model forward records the samples it receives. Its rows get the fields
    stock ``make_experience`` gives them: reference log-probs only with a reference model (one rank,
    ``reference``) and a KL loss."""

    def __init__(self, args, policy_ranks: int = 1, reference: bool = False):
        super().__init__(actor_group(policy_ranks), None, None, actor_group(1) if reference else None,
                         FixedKLController(args.algo.kl.init_coef), Strategy(args), Tokenizer())
        self.forwarded: list[int] = []

    def make_experience(self, samples_list):
        for batch in samples_list:
            self.forwarded += list(batch.index)
            batch.action_log_probs = torch.full(batch.action_mask.shape, -0.5)
            with_reference = self.initial_model_group is not None and self.args.algo.kl.use_loss
            batch.base_action_log_probs = torch.full(batch.action_mask.shape, -0.4) if with_reference else None
            batch.values = None
            batch.kl = torch.zeros(batch.action_mask.shape)
        return samples_list


def by_sample(experiences: list[Experience]) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """global sample id -> (advantages on its action tokens, its action mask)."""
    out = {}
    for exp in experiences:
        for row, sample_id in enumerate(exp.index):
            out[sample_id] = (exp.advantages[row], exp.action_mask[row])
    return out


def test_reinforce_rej_drops_uniform_groups_before_the_forward_pass():
    args = parse("--advantage_estimator", "reinforce_rej", "--n_samples_per_prompt", "4",
                 "--micro_rollout_batch_size", "2", "--init_kl_coef", "0", "--ext.dropped_rows", "exclude")
    maker = RecordingMaker(args)
    #               all correct  |   mixed          |  all wrong
    rewards = [1.0, 1, 1, 1] + [1.0, -1, -1, 1] + [-1.0, -1, -1, -1]
    experiences = maker.make_experience_batch(rollout(rewards))

    assert sorted(maker.forwarded) == [4, 5, 6, 7]  # only the mixed group met the models
    assert sum(len(e.index) for e in experiences) == 12  # every sample still goes to training
    per_sample = by_sample(experiences)
    for sample_id in (0, 1, 2, 3, 8, 9, 10, 11):  # masked rows: no token counts, no advantage
        advantages, mask = per_sample[sample_id]
        assert mask.sum() == 0 and advantages.abs().sum() == 0
    for sample_id, expected in zip((4, 5, 6, 7), (1.0, -1.0, -1.0, 1.0), strict=True):
        advantages, mask = per_sample[sample_id]
        assert mask.sum() > 0
        torch.testing.assert_close(advantages[mask.bool()], torch.full((int(mask.sum()),), expected))

    metrics = maker.last_metrics
    assert metrics["groups_all_correct"] == pytest.approx(1 / 3)
    assert metrics["groups_all_wrong"] == pytest.approx(1 / 3)
    assert metrics["groups_mixed"] == pytest.approx(1 / 3)
    assert metrics["kept_fraction"] == pytest.approx(4 / 12)
    assert metrics["forward_skipped_fraction"] == pytest.approx(8 / 12)
    assert metrics["reward_mean"] == pytest.approx(0.0)


def test_raft_keeps_only_correct_samples_with_advantage_one():
    args = parse("--advantage_estimator", "raft", "--n_samples_per_prompt", "2", "--init_kl_coef", "0",
                 "--ext.dropped_rows", "exclude")
    assert args.actor.policy_loss_type == "vanilla"
    maker = RecordingMaker(args)
    experiences = maker.make_experience_batch(rollout([1.0, 0.0, 0.0, 0.0, 1.0, 1.0]))
    assert sorted(maker.forwarded) == [0, 4, 5]
    per_sample = by_sample(experiences)
    for sample_id in (0, 4, 5):
        advantages, mask = per_sample[sample_id]
        assert torch.all(advantages[mask.bool()] == 1.0)
    assert all(per_sample[i][1].sum() == 0 for i in (1, 2, 3))


def test_all_filtered_batch_is_detected_without_any_forward():
    args = parse("--advantage_estimator", "reinforce_rej", "--n_samples_per_prompt", "2",
                 "--ext.dropped_rows", "exclude")
    maker = RecordingMaker(args)
    samples = rollout([1.0, 1.0, 0.0, 0.0])
    assert maker.plan_rollout(samples).all_filtered
    assert maker.forwarded == []
    assert not maker.plan_rollout(rollout([1.0, 0.0, 0.0, 0.0])).all_filtered


@pytest.mark.parametrize("estimator", ["reinforce", "reinforce_rej", "lite_ppo"])
def test_the_controllers_plan_is_used_as_is(estimator):
    # train_step plans a rollout once (length penalties, group statistics, keep decision) and hands
    # it on: the experience maker must not plan it again, and gives what it gives when it plans itself.
    args = parse("--advantage_estimator", estimator, "--n_samples_per_prompt", "4", "--init_kl_coef", "0",
                 "--ext.dropped_rows", "exclude")
    rewards = [1.0, 1, 1, 1] + [1.0, -1, -1, 1] + [-1.0, -1, 1, -1]
    planned_maker, samples = RecordingMaker(args), rollout(rewards)
    plan = planned_maker.plan_rollout(samples)
    planned_maker._plan = None  # any second planning would fail
    planned = planned_maker.make_experience_batch(PlannedRollout(samples, plan))
    plain_maker = RecordingMaker(args)
    plain = plain_maker.make_experience_batch(rollout(rewards))
    assert planned_maker.forwarded == plain_maker.forwarded
    assert planned_maker.last_metrics == plain_maker.last_metrics
    for mine, theirs in zip(planned, plain, strict=True):
        assert mine.index == theirs.index
        assert torch.equal(mine.advantages, theirs.advantages) and torch.equal(mine.action_mask, theirs.action_mask)


def test_zero_advantage_rows_stay_in_the_loss_and_skip_the_forward_without_kl_loss():
    # Reinforce-Rej as the Minimal-RL authors run it (their default --ext.dropped_rows), KL loss off:
    # uniform groups keep their action mask with advantage 0 but meet no model.
    args = parse("--advantage_estimator", "reinforce_rej", "--n_samples_per_prompt", "4",
                 "--micro_rollout_batch_size", "2", "--init_kl_coef", "0")
    assert args.ext.dropped_rows == "zero_advantage"
    maker = RecordingMaker(args)
    samples = rollout([1.0, 1, 1, 1] + [1.0, -1, -1, 1] + [-1.0, -1, -1, -1])
    lengths = [int(s.action_mask.sum()) for s in samples]
    experiences = maker.make_experience_batch(samples)
    assert sorted(maker.forwarded) == [4, 5, 6, 7]
    per_sample = by_sample(experiences)
    for sample_id in (0, 1, 2, 3, 8, 9, 10, 11):
        advantages, mask = per_sample[sample_id]
        assert int(mask.sum()) == lengths[sample_id] and advantages.abs().sum() == 0
    skipped = [e.action_log_probs for e in experiences if set(e.index) <= {0, 1, 2, 3, 8, 9, 10, 11}]
    assert len(skipped) == 4 and all(torch.isnan(lp).all() for lp in skipped)  # the loss takes ratio 1 there
    assert maker.last_metrics["forward_skipped_fraction"] == pytest.approx(8 / 12)


def test_zero_advantage_rows_get_the_forward_when_a_kl_loss_reads_them():
    args = parse("--advantage_estimator", "reinforce_rej", "--n_samples_per_prompt", "2")
    assert args.algo.kl.use_loss and args.algo.kl.init_coef == 0.001  # the preset's KL loss
    maker = RecordingMaker(args)
    experiences = maker.make_experience_batch(rollout([1.0, 1.0, 1.0, -1.0]))
    assert sorted(maker.forwarded) == [0, 1, 2, 3]
    assert not maker.plan_rollout(rollout([1.0, 1.0, -1.0, -1.0])).all_filtered  # uniform rows still carry KL / entropy
    assert all(int(mask.sum()) > 0 for _, mask in by_sample(experiences).values())


@pytest.mark.parametrize(
    ("keep", "truncated", "mode", "kl_loss", "in_loss", "forward"),
    [
        ([1, 0, 1, 0], [0, 0, 1, 1], "exclude", False, [1, 0, 0, 0], [1, 0, 0, 0]),
        ([1, 0, 1, 0], [0, 0, 1, 1], "exclude", True, [1, 0, 0, 0], [1, 0, 0, 0]),
        ([1, 0, 1, 0], [0, 0, 1, 1], "zero_advantage", False, [1, 1, 0, 0], [1, 0, 0, 0]),
        ([1, 0, 1, 0], [0, 0, 1, 1], "zero_advantage", True, [1, 1, 0, 0], [1, 1, 0, 0]),
    ],
)
def test_row_plan(keep, truncated, mode, kl_loss, in_loss, forward):
    got_loss, got_forward = row_plan(torch.tensor(keep).bool(), torch.tensor(truncated).bool(), mode, kl_loss)
    assert got_loss.tolist() == [bool(v) for v in in_loss]
    assert got_forward.tolist() == [bool(v) for v in forward]


def test_overlong_filter_masks_truncated_responses_and_counts_them():
    args = parse("--advantage_estimator", "group_norm", "--n_samples_per_prompt", "2", "--init_kl_coef", "0",
                 "--ext.overlong_filter", "--generate_max_len", "64")
    maker = RecordingMaker(args)
    samples = rollout([1.0, 0.0, 1.0, 0.0])
    samples[1].truncated = torch.tensor([True])  # finish reason "length"
    samples[2].truncated = None  # no flag recorded: a response filling max_new_tokens counts as truncated
    samples[2].action_mask[:, -2:] = 1
    maker.args.rollout.max_new_tokens = int(samples[2].action_mask.sum())
    experiences = maker.make_experience_batch(samples)
    per_sample = by_sample(experiences)
    assert sorted(maker.forwarded) == [0, 3]  # masked rows need no forward
    assert per_sample[1][1].sum() == 0 and per_sample[2][1].sum() == 0
    # the group statistics still see the truncated responses: A = (r - 0.5) / std = +-0.7071
    torch.testing.assert_close(per_sample[0][0][per_sample[0][1].bool()].unique(), torch.tensor([0.7071068]))
    assert maker.last_metrics["overlong_masked"] == 2


def normalisers(experiences: list[Experience]) -> tuple[float, float]:
    """The global token / sequence counts OpenRLHF's actor normalises the step's loss by."""
    masks = [e.action_mask for e in experiences]
    return float(sum(m.sum() for m in masks)), float(sum((m.sum(-1) > 0).sum() for m in masks))


def test_dropped_rows_modes_differ_in_the_normalisers_by_the_kept_token_fraction():
    # One rollout, two modes: the loss is sum(per-token loss) / N_tok, and only kept rows have a
    # non-zero per-token loss, so the step size of 'zero_advantage' is that of 'exclude' times the
    # kept-token fraction (RAFT++ Eq. 8 averages over the whole batch with an indicator).
    rewards = [1.0, 1, 1, 1] + [1.0, -1, -1, 1] + [-1.0, -1, -1, -1] + [1.0, 1, -1, -1]
    runs = {}
    for mode in ("exclude", "zero_advantage"):
        args = parse("--advantage_estimator", "reinforce_rej", "--n_samples_per_prompt", "4",
                     "--micro_rollout_batch_size", "4", "--ext.dropped_rows", mode)
        experiences = RecordingMaker(args).make_experience_batch(rollout(rewards, seed=1))
        runs[mode] = experiences
    samples = rollout(rewards, seed=1)
    lengths = torch.tensor([float(s.action_mask.sum()) for s in samples])
    kept_tokens, all_tokens = float(lengths[4:8].sum() + lengths[12:].sum()), float(lengths.sum())
    assert normalisers(runs["exclude"]) == (kept_tokens, 8.0)
    assert normalisers(runs["zero_advantage"]) == (all_tokens, 16.0)

    loss_fn = ExtPolicyLoss.from_args(parse("--advantage_estimator", "reinforce_rej", "--n_samples_per_prompt", "4"))
    losses = {}
    for mode, experiences in runs.items():
        n_tok, n_seq = normalisers(experiences)
        losses[mode] = sum(
            loss_fn(e.action_log_probs.nan_to_num(-0.5) + 0.1, e.action_log_probs, e.advantages, e.action_mask,
                    batch_num_tokens=n_tok, global_batch_size=n_seq)[0]
            for e in experiences
        )
    torch.testing.assert_close(losses["zero_advantage"], losses["exclude"] * kept_tokens / all_tokens)


def stock_maker(args) -> RemoteExperienceMaker:
    return RemoteExperienceMaker(None, None, None, None, FixedKLController(args.algo.kl.init_coef), Strategy(args),
                                 Tokenizer())


def micro_batches(n_prompts: int, n: int, kl_on: bool, seed: int) -> list[Experience]:
    gen = torch.Generator().manual_seed(seed)
    samples = rollout(torch.randint(0, 2, (n_prompts * n,), generator=gen).float().tolist(), seed=seed)
    for i, sample in enumerate(samples):
        sample.index = [i]
        sample.kl = torch.randn(sample.action_mask.shape, generator=gen) * 0.1 if kl_on else torch.zeros(
            sample.action_mask.shape)
    perm = torch.randperm(len(samples), generator=gen).tolist()  # micro-batches are not in prompt order
    batches = []
    for start in range(0, len(perm), 3):
        batch = Experience.concat_experiences([samples[i] for i in perm[start:start + 3]], 0)
        batch.kl = torch.nn.utils.rnn.pad_sequence(
            [samples[i].kl[0] for i in perm[start:start + 3]], batch_first=True)
        batches.append(batch)
    return batches


@pytest.mark.parametrize("estimator", ["reinforce", "rloo", "reinforce_baseline", "group_norm", "dr_grpo",
                                       "flash_reinforce"])
@pytest.mark.parametrize(("kl_on", "gamma"), [(False, 1.0), (True, 1.0), (True, 0.9)])
def test_stock_estimators_match_stock_experience_maker(estimator, kl_on, gamma):
    args = parse("--advantage_estimator", estimator, "--n_samples_per_prompt", "4", "--gamma", str(gamma),
                 "--init_kl_coef", "0.05" if kl_on else "0")
    batches = micro_batches(n_prompts=5, n=4, kl_on=kl_on, seed=hash((estimator, kl_on, gamma)) % 1000)
    ours = RecordingMaker(args).compute_advantages_and_returns(copy.deepcopy(batches))
    stock_args = copy.deepcopy(args)  # stock may reset gamma on its args
    stock = stock_maker(stock_args).compute_advantages_and_returns(copy.deepcopy(batches))
    for mine, theirs in zip(ours, stock, strict=True):
        # Compared on action tokens: stock whitening also shifts the (ignored) padding positions.
        mask = theirs.action_mask.bool()
        torch.testing.assert_close(mine.advantages[mask], theirs.advantages.float()[mask], atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(mine.returns * mine.action_mask, theirs.returns.float() * theirs.action_mask,
                                   atol=1e-6, rtol=1e-6)


def loss_inputs(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    log_probs = (torch.randn(4, 6, generator=gen) * 0.3 - 1.0).requires_grad_(True)
    old = log_probs.detach() + torch.randn(4, 6, generator=gen) * 0.2
    advantages = torch.randn(4, 6, generator=gen)
    mask = torch.tensor([[1] * 6, [1] * 3 + [0] * 3, [0] * 6, [1] * 5 + [0]], dtype=torch.float32)
    return log_probs, old, advantages, mask


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
def test_stock_settings_run_the_stock_loss(agg):
    args = parse("--advantage_estimator", "group_norm", "--n_samples_per_prompt", "4", "--loss_agg_mode", agg,
                 "--eps_clip_low_high", "0.2", "0.28")
    ours = ExtPolicyLoss.from_args(args)
    stock = PolicyLoss(clip_eps_low=0.2, clip_eps_high=0.28, token_level_loss=agg == "token-mean")
    log_probs, old, advantages, mask = loss_inputs()
    info = {"dp_size": 1, "batch_num_tokens": mask.sum(), "global_batch_size": torch.tensor(3.0)}
    assert ours.uses_stock_path
    torch.testing.assert_close(ours(log_probs, old, advantages, mask, **info)[0],
                               stock(log_probs, old, advantages, mask, **info)[0])


def test_vanilla_loss_is_minus_advantage_times_logprob():
    args = parse("--advantage_estimator", "raft", "--n_samples_per_prompt", "4")
    loss_fn = ExtPolicyLoss.from_args(args)
    log_probs, old, advantages, mask = loss_inputs()
    loss, clip_fraction, *_ = loss_fn(log_probs, old, advantages, mask, dp_size=1, batch_num_tokens=mask.sum(),
                                      global_batch_size=torch.tensor(3.0))
    expected = -(advantages * log_probs * mask).sum() / mask.sum()  # token-mean of −A·log π
    torch.testing.assert_close(loss, expected)
    assert clip_fraction == 0
    loss.backward()
    torch.testing.assert_close(log_probs.grad, -advantages * mask / mask.sum())


def test_dr_grpo_loss_uses_the_constant_normaliser():
    args = parse("--advantage_estimator", "dr_grpo", "--n_samples_per_prompt", "4", "--generate_max_len", "100")
    loss_fn = ExtPolicyLoss.from_args(args)
    log_probs, _, advantages, mask = loss_inputs()
    old = log_probs.detach()  # ratio 1: loss per token = −A
    loss, *_ = loss_fn(log_probs, old, advantages, mask, dp_size=1, batch_num_tokens=mask.sum(),
                       global_batch_size=torch.tensor(3.0))
    torch.testing.assert_close(loss, -(advantages * mask).sum() / (3 * 100))


def test_unsupported_combinations_are_refused():
    with pytest.raises(ValueError, match="GSPO"):
        ExtPolicyLoss(loss_agg_mode="seq-mean-token-sum", policy_loss_type="gspo")
    with pytest.raises(ValueError, match="is_correction_level"):
        ExtPolicyLoss(loss_agg_mode="token-mean", policy_loss_type="vanilla", is_correction_level="token")


def test_reward_step_stats_from_the_reward_files_extra_logs():
    from openrlhf_ext.trainer.ppo_trainer import reward_step_stats

    samples = rollout([1.0, 0.0, 0.0, 1.0])
    latencies = [0.01, 0.02, 0.03, 2.0]
    for sample, latency, timed_out in zip(samples, latencies, [0, 0, 0, 1], strict=True):
        sample.info.update({
            "reward_correct": sample.rewards.clone(), "reward_format_error": torch.tensor([0.0]),
            "reward_timed_out": torch.tensor([float(timed_out)]), "reward_error": torch.tensor([0.0]),
            "reward_latency_s": torch.tensor([latency]),
        })
    stats = reward_step_stats(samples)
    assert stats["reward/timeout_count"] == 1
    assert stats["reward/accuracy"] == pytest.approx(0.5)
    assert stats["reward/latency_p50_s"] == pytest.approx(0.025)
    assert 1.9 < stats["reward/latency_p99_s"] <= 2.0
    assert reward_step_stats(rollout([1.0])) == {}  # a reward file without these logs


def test_two_policy_ranks_get_as_many_forwards_and_training_rows_each():
    """ZeRO-3 gathers parameters collectively in every forward pass: each rank must get the same number of
    forward micro-batches and (for the training micro-batches) of rows, however many rows the filter drops."""
    args = parse("--advantage_estimator", "reinforce_rej", "--n_samples_per_prompt", "4",
                 "--micro_rollout_batch_size", "4", "--init_kl_coef", "0", "--ext.dropped_rows", "exclude")
    maker = RecordingMaker(args, policy_ranks=2)
    #               all correct  |   all correct    |   mixed            | all wrong
    rewards = [1.0, 1, 1, 1] + [1.0, 1, 1, 1] + [1.0, -1, 1, -1] + [-1.0, -1, -1, -1]
    experiences = maker.make_experience_batch(rollout(rewards))

    # One micro-batch of kept rows, padded with one 2-token stub micro-batch for the second rank (dropped after).
    assert sorted(maker.forwarded) == [-1, 8, 9, 10, 11]
    # Stock's 4 micro-batches of 4 rows; OpenRLHF hands the first 2 to rank 0, the last 2 to rank 1.
    assert [len(e.index) for e in experiences] == [4, 4, 4, 4]
    assert sorted(i for e in experiences for i in e.index) == list(range(16))
    in_loss = [int((e.action_mask.sum(-1) > 0).sum()) for e in experiences]
    assert in_loss[0] + in_loss[1] == in_loss[2] + in_loss[3] == 2  # the 4 rows in the loss, 2 per rank
    for e in experiences:
        assert e.info["reward"].shape == (4,) and e.advantages.shape[0] == 4


@pytest.mark.parametrize("reference", [False, True])
def test_rows_that_skip_the_forward_carry_the_fields_of_the_forwarded_rows(reference):
    """A KL-loss preset without a reference model (--init_kl_coef 0): the forwarded rows have no reference
    log-probs, so the skipped rows must have none either. Stock batching takes each field's type from the
    first row; a training micro-batch (> 1 row) or dynamic batching mixing both kinds failed in
    ``None.size(-1)``."""
    from openrlhf.trainer.ppo_utils.experience import balance_experiences, make_experience_batch, split_experience_batch

    args = parse("--advantage_estimator", "reinforce_rej", "--n_samples_per_prompt", "4", "--micro_rollout_batch_size",
                 "4", "--init_kl_coef", "0.001" if reference else "0", "--actor.entropy_coef", "0.001")
    assert args.algo.kl.use_loss and args.ext.dropped_rows == "zero_advantage"
    maker = RecordingMaker(args, reference=reference)
    experiences = maker.make_experience_batch(rollout([1.0, 1, 1, 1] + [1.0, -1, -1, 1]))
    forwarded = {4, 5, 6, 7} if not reference else set(range(8))  # the KL loss reads the uniform group's rows
    assert set(maker.forwarded) == forwarded
    rows = [row for e in experiences for row in split_experience_batch(e)]
    assert {row.base_action_log_probs is None for row in rows} == {not reference}
    for batch in (make_experience_batch(rows), *balance_experiences(experiences, args)):
        assert (batch.base_action_log_probs is None) == (not reference)


def test_dynamic_batch_with_fewer_kept_rows_than_policy_ranks():
    """Stock's dynamic split makes at least one micro-batch per data-parallel rank and asserts a row for
    each: a filter that keeps 1 row with 2 policy ranks crashed in the forward split."""
    args = parse("--advantage_estimator", "raft", "--n_samples_per_prompt", "4", "--init_kl_coef", "0",
                 "--train.dynamic_batch_enable", "--ds.packing_samples", "--ext.dropped_rows", "exclude",
                 "--actor.num_gpus_per_node", "2")
    maker = RecordingMaker(args, policy_ranks=2)
    experiences = maker.make_experience_batch(rollout([0.0, 0, 1, 0] + [0.0, 0, 0, 0]))
    assert sorted(maker.forwarded) == [-1, 2]  # the kept row, and a stub micro-batch for the second rank
    assert sorted(i for e in experiences for i in e.index) == list(range(8))
    in_loss = [i for e in experiences for i, mask in zip(e.index, e.action_mask, strict=True) if mask.any()]
    assert in_loss == [2]


def _cuda_platform_config(monkeypatch, *flags: str):
    """A configuration resolved for a GPU cluster (modes the CPU platform refuses before Ray)."""
    monkeypatch.setenv("OPENRLHF_EXT_PLATFORM", "cuda")
    return parse(*flags)


@pytest.mark.parametrize("mode", [("--ds.ring_attn_size", "2", "--ds.packing_samples"), ("--ds.tensor_parallel_size", "2")])
def test_ring_attention_and_tensor_parallel_peers_share_their_rows(monkeypatch, mode):
    """Unit-tested only (GPU-only modes): 4 policy actors in groups of 2 that split each row between them
    are 2 data-parallel ranks. The forward micro-batches are padded to a multiple of 2 and the training rows
    dealt to 2 ranks as stock deals them; the stub rows of a padded forward never reach the trainer."""
    args = _cuda_platform_config(monkeypatch, "--advantage_estimator", "reinforce_rej", "--n_samples_per_prompt", "4",
                                 "--micro_rollout_batch_size", "4", "--init_kl_coef", "0", "--ext.dropped_rows",
                                 "exclude", "--actor.num_gpus_per_node", "4", "--vllm.num_engines", "1", *mode)
    maker = RecordingMaker(args)
    maker.actor_model_group = SimpleNamespace(_actor_handlers=[None] * 4, duplicate_actors=2)
    rewards = [1.0, 1, 1, 1] + [1.0, 1, 1, 1] + [1.0, -1, 1, -1] + [-1.0, -1, -1, -1]
    experiences = maker.make_experience_batch(rollout(rewards))
    assert sorted(maker.forwarded) == [-1, 8, 9, 10, 11]  # one kept micro-batch + one stub for the second rank
    assert [len(e.index) for e in experiences] == [4, 4, 4, 4]
    in_loss = [int((e.action_mask.sum(-1) > 0).sum()) for e in experiences]
    assert in_loss[0] + in_loss[1] == in_loss[2] + in_loss[3] == 2


def test_ring_attention_trains_every_row_of_the_stock_replay_buffer(monkeypatch, tmp_path):
    """Unit-tested only: ring attention splits each row across ranks, and a 2-token stub row cannot be split,
    so the policy keeps stock's replay buffer (rows out of the loss are trained as masked rows)."""
    from openrlhf.trainer.ppo_utils.replay_buffer import NaiveReplayBuffer
    from support.actor_trainer import actor_trainer

    from openrlhf_ext.trainer.train_rows import SkippingReplayBuffer

    args = _cuda_platform_config(monkeypatch, "--advantage_estimator", "reinforce_rej", "--n_samples_per_prompt", "4", "--ds.ring_attn_size", "2", "--vllm.num_engines", "1",
                                 "--ds.packing_samples")
    monkeypatch.setattr("support.actor_trainer.InProcessStrategy.ring_attn_group", object())
    trainer = actor_trainer(tmp_path / "model", args)
    assert type(trainer.replay_buffer) is NaiveReplayBuffer
    monkeypatch.setattr("support.actor_trainer.InProcessStrategy.ring_attn_group", None)
    assert isinstance(actor_trainer(tmp_path / "model", args).replay_buffer, SkippingReplayBuffer)
