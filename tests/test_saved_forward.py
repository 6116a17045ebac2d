"""The saved policy forward: when a rollout is trained in one optimizer step, experience making skips the
policy's forward pass and the loss takes the old log-probs from the training forward (ratio 1)
(:func:`openrlhf_ext.trainer.experience_maker.saves_policy_forward`, docs/algorithms.md §5).

Real parts: our experience maker with stock ``make_experience``, our actor trainer and policy loss,
OpenRLHF's ``ppo_train`` / ``training_step`` and loss normalisers, stock ``PolicyModelActor.forward`` on a
tiny Llama, a 2-process gloo group. Stand-ins: Ray's object store (``ray.put`` / ``ray.get`` on plain
values), the actor groups (:class:`InProcessGroup` calls the forward in this process) and DeepSpeed's
loss scaling / gradient averaging / stepping (tests/support/actor_trainer.py).
"""

from __future__ import annotations

import copy
import math
import time
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import free_port
from openrlhf.trainer.ppo_utils import experience_maker as stock_experience_maker
from openrlhf.trainer.ppo_utils.experience import Experience
from openrlhf.trainer.ppo_utils.kl_controller import FixedKLController
from openrlhf.trainer.ray.ppo_actor import PolicyModelActor
from support.actor_trainer import VOCAB, actor_trainer, resolve_args
from support.spawned import call

from openrlhf_ext.reaches import Where, scoped
from openrlhf_ext.reaches.patching import swapped
from openrlhf_ext.trainer.experience_maker import (
    ExtExperienceMaker,
    saves_policy_forward,
    within_one_optimizer_step,
)

# One rollout = one training batch: 4 prompts x 2 samples, experience and training micro-batches of 2.
ONE_STEP = ("--n_samples_per_prompt", "2", "--rollout.batch_size", "4", "--train.batch_size", "8",
            "--micro_rollout_batch_size", "2", "--micro_train_batch_size", "2")
#          mixed  | all correct | mixed | all wrong
REWARDS = [1.0, -1] + [1.0, 1] + [-1.0, 1] + [-1.0, -1]


# -- the decision ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("flags", "saved", "reason"), [
    ((), True, "one optimizer step per rollout"),
    # The critic's values and the reference's log-probs still come from their forwards.
    (("--advantage_estimator", "gae"), True, "one optimizer step per rollout"),
    (("--advantage_estimator", "reinforce_rej"), True, "one optimizer step per rollout"),  # its KL loss
    # The vLLM correction and vllm_kl compare the rollout's log-probs with the old ones inside the loss,
    # which takes the training forward's there.
    (("--algo.advantage.is_correction_level", "token"), True, "one optimizer step per rollout"),
    # Filtered prompts are replaced before training: a short rollout is checked per rollout.
    (("--algo.dynamic_filtering_enable",), True, "one optimizer step per rollout"),
    (("--init_kl_coef", "0.01"), False, "KL in the reward"),
    (("--advantage_estimator", "gae", "--init_kl_coef", "0.01"), False, "KL in the reward"),
    (("--use_kl_loss", "--init_kl_coef", "0.01", "--algo.kl.unbiased_gradient"), False, "unbiased_gradient"),
    (("--use_kl_loss", "--init_kl_coef", "0", "--algo.kl.unbiased_gradient"), True, "one optimizer step"),
    (("--train.max_epochs", "2"), False, "--train.max_epochs 2"),
    (("--train.batch_size", "4"), False, "8 samples per rollout, --train.batch_size 4"),
    (("--rollout.batch_size", "8"), False, "16 samples per rollout, --train.batch_size 8"),
    (("--train.async_enable",), False, "--train.async_enable"),
])
def test_when_the_policy_forward_is_saved(flags, saved, reason):
    args = resolve_args(*ONE_STEP, "--init_kl_coef", "0", *flags)
    got, why = saves_policy_forward(args)
    assert got is saved and reason in why


def test_a_rollout_shorter_than_a_training_batch_moves_the_optimizer_steps_into_the_next_ones():
    # DeepSpeed steps after every 8 rows of the run: rollouts of 8, 4, 8, 4, 8 rows.
    made, saved = 0, []
    for rows in (8, 4, 8, 4, 8):
        saved.append(within_one_optimizer_step(made, rows, 8))
        made += rows
    assert saved == [True, True, False, True, True]


# -- experience making -------------------------------------------------------------------------------

class InProcessGroup:
    """What the experience maker reads and calls of OpenRLHF's RayActorGroup: its data-parallel ranks, and
    ``async_run_method_batch("forward", ...)`` returning per-rank lists of results (as ``ray.get`` would),
    each rank a contiguous chunk of the micro-batches, computed here by ``forward``. Records the rows of
    every micro-batch it is given."""

    duplicate_actors = 1

    def __init__(self, forward, ranks: int = 1) -> None:
        self._actor_handlers = [None] * ranks
        self.forward = forward
        self.rows: list[int] = []

    def async_run_method_batch(self, method_name: str, **batch):
        assert method_name == "forward"
        n = len(batch["sequences"])
        self.rows += [len(s) for s in batch["sequences"]]
        size = math.ceil(n / len(self._actor_handlers))
        return [[self.forward(**{key: value[i] for key, value in batch.items()}) for i in range(start, min(start + size, n))]
                for start in range(0, n, size)]


def constant_forward(value: float):
    return lambda sequences, action_mask, attention_mask: torch.full(action_mask.shape, value)


def model_forward(actor):
    """Stock ``PolicyModelActor.forward`` (eval mode, no grad) on ``actor``, in this process."""
    worker = SimpleNamespace(actor=actor, strategy=SimpleNamespace(ring_attn_group=None))
    forward = PolicyModelActor.__ray_actor_class__.forward
    return lambda **batch: forward(worker, **batch)


NO_OBJECT_STORE = SimpleNamespace(put=lambda value: value, get=lambda value: value)


def maker_for(args, policy: InProcessGroup, reference: InProcessGroup | None = None,
              critic: InProcessGroup | None = None) -> ExtExperienceMaker:
    return ExtExperienceMaker(policy, critic, None, reference, FixedKLController(args.algo.kl.init_coef),
                              SimpleNamespace(args=args), SimpleNamespace(pad_token_id=0))


def make(maker: ExtExperienceMaker, samples: list[Experience]) -> list[Experience]:
    with swapped(stock_experience_maker, "ray", NO_OBJECT_STORE), \
            swapped(torch.cuda, "current_device", lambda: torch.device("cpu")):
        return maker.make_experience_batch(samples)


def rollout(rewards: list[float], seed: int = 0, vllm_log_probs: bool = False) -> list[Experience]:
    """Single-sample experiences as OpenRLHF's SamplesGenerator makes them: 3 prompt tokens, 2-6 response tokens;
    ``vllm_log_probs``: with the engine's log-probs (``--algo.advantage.is_correction_level``)."""
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for reward in rewards:
        response_len = int(torch.randint(2, 7, (1,), generator=gen))
        total = 3 + response_len
        action_mask = torch.zeros(1, total - 1, dtype=torch.bool)
        action_mask[:, 2:] = True
        # The tiny model's log-probs are near -log(VOCAB): the IS ratio falls inside [0.5, 5] and outside.
        engine = (-math.log(VOCAB) + torch.randn(1, total - 1, generator=gen)) * action_mask
        samples.append(Experience(
            sequences=torch.randint(1, VOCAB, (1, total), generator=gen),
            attention_mask=torch.ones(1, total, dtype=torch.long),
            action_mask=action_mask,
            rollout_log_probs=engine if vllm_log_probs else None,
            rewards=torch.tensor([reward]),
            response_length=torch.tensor([response_len]),
            total_length=torch.tensor([float(total)]),
            truncated=torch.tensor([False]),
            prompts=["p"],
            labels=["l"],
            info={"reward": torch.tensor([reward])},
        ))
    return samples


@pytest.mark.parametrize("policy_ranks", [1, 2])
def test_the_policy_forward_is_not_dispatched_when_saved_and_the_reference_forward_is(policy_ranks):
    # Reinforce-Rej with its KL loss: the reference log-probs of every row in the loss are still needed.
    args = resolve_args(*ONE_STEP, "--advantage_estimator", "reinforce_rej", "--init_kl_coef", "0.001")
    policy, reference = InProcessGroup(constant_forward(-0.5), policy_ranks), InProcessGroup(constant_forward(-0.4))
    maker = maker_for(args, policy, reference)
    assert maker.saves_policy_forward
    experiences = make(maker, rollout(REWARDS))
    assert policy.rows == []
    assert sum(reference.rows) == 8  # the KL loss reads every row (the uniform groups' too)
    for experience in experiences:
        assert torch.isnan(experience.action_log_probs[experience.action_mask]).all()
        assert (experience.base_action_log_probs[experience.action_mask] == -0.4).all()
        # Stock make_experience's zeros for a KL loss (never read from the old log-probs): no NaN logged.
        assert torch.equal(experience.info["kl"], torch.zeros(2))
        assert torch.equal(experience.info["logprobs_diff"], torch.zeros(2))
    assert maker.last_metrics["policy_forward_saved"] == 1.0


@pytest.mark.parametrize("flags", [("--train.max_epochs", "2"), ("--train.batch_size", "4")])
def test_the_policy_forward_runs_when_not_saved(flags):
    args = resolve_args(*ONE_STEP, "--advantage_estimator", "group_norm", "--init_kl_coef", "0", *flags)
    policy = InProcessGroup(constant_forward(-0.5))
    maker = maker_for(args, policy)
    experiences = make(maker, rollout(REWARDS))
    assert not maker.saves_policy_forward
    assert sum(policy.rows) == 8
    assert all((e.action_log_probs[e.action_mask] == -0.5).all() for e in experiences)
    assert maker.last_metrics["policy_forward_saved"] == 0.0


def test_gae_runs_the_critic_only():
    args = resolve_args(*ONE_STEP, "--advantage_estimator", "gae", "--init_kl_coef", "0")
    policy, critic = InProcessGroup(constant_forward(-0.5)), InProcessGroup(constant_forward(0.25))
    maker = maker_for(args, policy, critic=critic)
    experiences = make(maker, rollout(REWARDS))
    assert policy.rows == [] and sum(critic.rows) == 8
    for experience in experiences:
        assert torch.isnan(experience.action_log_probs[experience.action_mask]).all()
        assert not torch.isnan(experience.advantages).any()
        assert (experience.values[experience.action_mask] == 0.25).all()


def test_a_short_rollout_moves_the_saved_forward_to_the_rollouts_that_stay_within_one_step():
    args = resolve_args(*ONE_STEP, "--advantage_estimator", "group_norm", "--init_kl_coef", "0")
    policy = InProcessGroup(constant_forward(-0.5))
    maker = maker_for(args, policy)
    dispatched = []
    for rewards in (REWARDS, REWARDS[:4], REWARDS, REWARDS[4:]):  # 8, 4, 8, 4 rows
        before = len(policy.rows)
        make(maker, rollout(rewards))
        dispatched.append(len(policy.rows) > before)
    assert dispatched == [False, False, True, False]


# -- training: the gradient and logged loss of the stock two-forward path ----------------------------

CASES = {
    # GRPO with the vLLM correction (stock loss path): the IS weight and vllm_kl read the old log-probs.
    "group_norm_is_correction": ("--advantage_estimator", "group_norm", "--init_kl_coef", "0",
                                 "--algo.advantage.is_correction_level", "token"),
    # Reinforce-Rej as its preset runs: zero-advantage rows, k3 KL loss against a reference, entropy bonus,
    # dual clip.
    "reinforce_rej": ("--advantage_estimator", "reinforce_rej", "--init_kl_coef", "0.001"),
    # Dr. GRPO: our loss path (seq-mean-token-sum-norm).
    "dr_grpo": ("--advantage_estimator", "dr_grpo", "--init_kl_coef", "0", "--generate_max_len", "6"),
}


def train(model_dir, case: str, ranks: int, rank: int, saved: bool) -> dict:
    """One rollout made by the experience maker (the policy forward saved, or run as stock runs it) and
    trained by ppo_train on this rank: the gradient of its optimizer step, the logged status."""
    args = resolve_args(*ONE_STEP, *CASES[case])
    trainer = actor_trainer(model_dir, args, accumulated_gradient=4 // ranks, micro_batch_size=2)
    policy = InProcessGroup(model_forward(trainer.actor), ranks)
    reference = InProcessGroup(model_forward(copy.deepcopy(trainer.actor))) if args.algo.kl.init_coef > 0 else None
    maker = maker_for(args, policy, reference)
    assert maker.saves_policy_forward
    maker.saves_policy_forward = saved  # not saved: stock's old log-probs, a forward of the same weights
    experiences = make(maker, rollout(REWARDS, seed=7, vllm_log_probs="is_correction" in case))
    per_rank = math.ceil(len(experiences) / ranks)  # how async_run_method_batch hands them to the ranks
    for experience in experiences[rank * per_rank:(rank + 1) * per_rank]:
        trainer.replay_buffer.append(experience)
    torch.manual_seed(1)  # the DataLoader's shuffle: the same micro-batches in both runs
    with scoped(Where.POLICY_WORKER), swapped(torch.cuda, "current_device", lambda: torch.device("cpu")):
        status = trainer.ppo_train(maker.kl_ctl.value)
    return {"gradients": trainer.strategy.step_gradients, "status": status, "policy_rows": sum(policy.rows)}


def compare(saved: dict, stock: dict, case: str) -> None:
    assert saved["policy_rows"] == 0 and stock["policy_rows"] > 0
    assert len(saved["gradients"]) == len(stock["gradients"]) == 1  # one optimizer step per rollout
    for name, grad in stock["gradients"][0].items():
        torch.testing.assert_close(saved["gradients"][0][name], grad, rtol=1e-5, atol=1e-7, msg=name)
    assert any(g.abs().max() > 0 for g in stock["gradients"][0].values()), "nothing trained: a vacuous comparison"
    ours, theirs = saved["status"], stock["status"]
    assert all(math.isfinite(v) for v in ours.values() if isinstance(v, float)), ours
    assert ours.keys() == theirs.keys()
    # Trivial under the saved forward by construction, and within float noise of it in stock.
    assert ours["ppo_kl"] == 0.0 and ours["ppo_clip_ratio"] == 0.0
    assert abs(theirs["ppo_kl"]) < 1e-6 and theirs["ppo_clip_ratio"] == 0.0
    logged = {"policy_loss", "entropy_loss", "kl", "logprobs_diff", "vllm_kl", "is_filter_ratio"} & theirs.keys()
    if case == "group_norm_is_correction":
        assert {"vllm_kl", "is_filter_ratio"} <= logged and 0 < theirs["is_filter_ratio"] < 1
    if case == "reinforce_rej":
        assert {"kl", "logprobs_diff", "entropy_loss"} <= logged
    for key in logged:
        assert ours[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-7), key


@pytest.mark.parametrize("case", CASES)
def test_one_rank_trains_the_gradient_and_loss_of_the_stock_two_forward_path(tmp_path, case):
    saved = train(tmp_path / "model", case, ranks=1, rank=0, saved=True)
    stock = train(tmp_path / "model", case, ranks=1, rank=0, saved=False)
    compare(saved, stock, case)


def _rank(rank: int, port: int, model_dir) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    out = {(case, saved): train(model_dir, case, ranks=2, rank=rank, saved=saved)
           for case in CASES for saved in (True, False)}
    torch.save(out, model_dir.parent / f"rank{rank}.pt")
    dist.destroy_process_group()


def test_two_ranks_train_the_gradient_and_loss_of_the_stock_two_forward_path(tmp_path):
    actor_trainer(tmp_path / "model", resolve_args(*ONE_STEP))  # writes the model once, before the ranks
    procs = mp.start_processes(call, args=(f"{__name__}:_rank", free_port(), tmp_path / "model"),
                               nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + 300
    while not procs.join(timeout=1):
        assert time.monotonic() < deadline, "the ranks did not finish: a collective hang"
    by_rank = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    for out in by_rank:
        for case in CASES:
            compare(out[case, True], out[case, False], case)
    for case in CASES:  # the gradient is averaged over the ranks: both hold the same
        ours, theirs = by_rank[0][case, True]["gradients"][0], by_rank[1][case, True]["gradients"][0]
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)
