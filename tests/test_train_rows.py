"""Rows that cannot change the gradient never enter a training forward/backward
(:mod:`openrlhf_ext.trainer.train_rows`), and an optimizer step's gradient is the one stock OpenRLHF
computes with them in the micro-batches as masked rows (same loss normalisers), for 1 and 2
data-parallel ranks.

Real parts: our actor trainer and policy loss, OpenRLHF's ``ppo_train`` / ``training_step``, replay
buffer, DataLoader and loss normalisers, the policy-worker reach, a tiny Llama, a 2-process gloo group.
Stand-in: DeepSpeed's loss scaling / gradient averaging / stepping (tests/support/actor_trainer.py).
"""

from __future__ import annotations

import math
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import free_port
from openrlhf.trainer.ppo_utils.replay_buffer import NaiveReplayBuffer
from support.actor_trainer import actor_trainer, resolve_args, rows
from support.spawned import call

from openrlhf_ext.reaches import Where, scoped
from openrlhf_ext.reaches.patching import swapped
from openrlhf_ext.trainer.train_rows import SkippingReplayBuffer, cannot_change_gradient, stub_row

FULL, SHORT, NONE = [1] * 5, [1, 1, 1, 0, 0], [0] * 5

# Two ways a row is out of the gradient, each with the flags that make it so. A rank's rollout is 8
# rows in 2-row Experiences; micro-batches of 2 rows, 2 per optimizer step: 2 optimizer steps per rank.
CASES = {
    # --ext.dropped_rows exclude (+ a KL loss, so only rows with no action token are skipped)
    "excluded": (("--advantage_estimator", "reinforce_rej", "--ext.dropped_rows", "exclude", "--use_kl_loss",
                  "--init_kl_coef", "0.01"),
                 lambda seed, real: [rows([FULL, NONE] if real else [NONE, NONE], seed),
                                     rows([NONE, NONE], seed + 1),
                                     rows([SHORT, NONE] if real else [NONE, NONE], seed + 2),
                                     rows([NONE, NONE], seed + 3)]),
    # zero_advantage rows (the Minimal-RL authors' setting): in the loss mask with advantage 0 and the NaN
    # old log-probs of a row that skipped the rollout forwards; no other loss term reads them (the preset's
    # entropy bonus would).
    "zero_advantage": (("--advantage_estimator", "reinforce_rej", "--ext.dropped_rows", "zero_advantage",
                        "--actor.entropy_coef", "0"),
                       lambda seed, real: [rows([FULL, SHORT], seed) if real else
                                           rows([FULL, SHORT], seed, advantages=[0.0, 0.0], old_log_prob=math.nan),
                                           rows([FULL, FULL], seed + 1, advantages=[0.0, 0.0], old_log_prob=math.nan),
                                           rows([SHORT, FULL], seed + 2) if real else
                                           rows([SHORT, FULL], seed + 2, advantages=[0.0, 0.0], old_log_prob=math.nan),
                                           rows([FULL, SHORT], seed + 3, advantages=[0.0, 0.0], old_log_prob=math.nan)]),
}


def train(model_dir, case: str, rank_rows: list, skipping: bool) -> dict:
    """One rollout's ppo_train on this rank: the gradient of each optimizer step, the trained micro-batches."""
    flags, _ = CASES[case]
    trainer = actor_trainer(model_dir, resolve_args(*flags), accumulated_gradient=2, micro_batch_size=2)
    if not skipping:  # stock: the rows stay in their micro-batches as masked / zero-advantage rows
        with swapped(torch.cuda, "current_device", lambda: 0):
            trainer.replay_buffer = NaiveReplayBuffer(2, cpu_offload=False)
    for experience in rank_rows:
        trainer.replay_buffer.append(experience)
    trained, training_step = [], trainer.training_step

    def recording_step(experience, *args, **kwargs):
        trained.append((tuple(experience.sequences.shape), experience.action_mask.sum(-1).tolist(),
                        [bool((a[m.bool()] != 0).any()) for a, m in zip(experience.advantages, experience.action_mask, strict=True)]))
        return training_step(experience, *args, **kwargs)

    trainer.training_step = recording_step
    torch.manual_seed(1)  # the DataLoader's shuffle: the same micro-batches in both runs
    with scoped(Where.POLICY_WORKER), swapped(torch.cuda, "current_device", lambda: torch.device("cpu")):
        status = trainer.ppo_train(0.0)
    return {"gradients": trainer.strategy.step_gradients, "trained": trained, "status": status}


def compare(skipped: dict, stock: dict, case: str, real_rows: bool) -> None:
    # Same number of forward/backward calls and optimizer steps as stock.
    assert len(skipped["trained"]) == len(stock["trained"]) == 4
    assert len(skipped["gradients"]) == len(stock["gradients"]) == 2
    for shape, tokens, has_advantage in skipped["trained"]:
        if shape == (1, 2):  # a micro-batch whose rows were all skipped: one 2-token stub row, no action token
            assert tokens == [0]
            continue
        assert all(t > 0 for t in tokens), "a row with no action token was trained"
        if case == "zero_advantage":
            assert all(has_advantage), "a zero-advantage row was trained"
    if not real_rows:
        assert [shape for shape, *_ in skipped["trained"]] == [(1, 2)] * 4
    for ours, theirs in zip(skipped["gradients"], stock["gradients"], strict=True):
        for name, grad in theirs.items():
            torch.testing.assert_close(ours[name], grad, rtol=1e-5, atol=1e-7, msg=name)
    assert any(g.abs().max() > 0 for g in stock["gradients"][0].values()), "nothing trained: a vacuous comparison"
    for key in ("policy_loss", "ppo_kl", "ppo_clip_ratio"):
        assert math.isfinite(skipped["status"][key]), key


@pytest.mark.parametrize("case", CASES)
def test_one_rank_skips_rows_and_keeps_the_stock_gradient(tmp_path, case):
    _, build = CASES[case]
    rank_rows = build(seed=10, real=True)
    skipped = train(tmp_path / "model", case, rank_rows, skipping=True)
    stock = train(tmp_path / "model", case, build(seed=10, real=True), skipping=False)
    compare(skipped, stock, case, real_rows=True)
    out_of_gradient = {"excluded": 6, "zero_advantage": 4}[case]
    assert skipped["status"]["train_rows_skipped"] == out_of_gradient


def _rank(rank: int, port: int, model_dir, case: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    torch.set_num_threads(1)
    _, build = CASES[case]
    # Rank 1's rows are all out of the gradient: it trains only stub rows, in step with rank 0.
    out = {mode: train(model_dir, case, build(seed=10 + rank, real=rank == 0), skipping=mode == "skipped")
           for mode in ("skipped", "stock")}
    torch.save(out, model_dir.parent / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.mark.parametrize("case", CASES)
def test_two_ranks_one_with_no_real_row_train_in_step_with_the_stock_gradient(tmp_path, case):
    actor_trainer(tmp_path / "model", resolve_args(*CASES[case][0]))  # writes the model once, before the ranks
    procs = mp.start_processes(call, args=(f"{__name__}:_rank", free_port(), tmp_path / "model", case),
                               nprocs=2, join=False, start_method="spawn")
    deadline = time.monotonic() + 240
    while not procs.join(timeout=1):
        assert time.monotonic() < deadline, "the ranks did not finish: a collective hang"
    by_rank = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    for rank, out in enumerate(by_rank):
        compare(out["skipped"], out["stock"], case, real_rows=rank == 0)
    # The gradient is averaged over the ranks: both hold the same.
    for ours, theirs in zip(by_rank[0]["skipped"]["gradients"], by_rank[1]["skipped"]["gradients"], strict=True):
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert by_rank[0]["skipped"]["status"]["train_rows_skipped"] == {"excluded": 6 + 8, "zero_advantage": 4 + 8}[case]


def test_which_rows_cannot_change_the_gradient_and_the_stub():
    batch = rows([FULL, NONE, SHORT], seed=3, advantages=[1.0, 1.0, 0.0])
    with swapped(torch.cuda, "current_device", lambda: 0):
        buffer = NaiveReplayBuffer(1, cpu_offload=False)
        skipping = SkippingReplayBuffer.like(buffer, policy_term_only=True)
    buffer.append(batch)
    full, none, short_zero = buffer.items
    assert [cannot_change_gradient(r, policy_term_only=False) for r in buffer.items] == [False, True, False]
    assert [cannot_change_gradient(r, policy_term_only=True) for r in buffer.items] == [False, True, True]
    stub = stub_row(none)
    assert stub.sequences.tolist() == none.sequences[-2:].tolist() and stub.attention_mask.tolist() == [1, 1]
    assert stub.action_mask.tolist() == [False] and stub.advantages.tolist() == [0.0]
    assert stub.action_log_probs.tolist() == [0.0] and stub.info == none.info
    batch = skipping.collate_fn([full, none, short_zero])
    assert batch.sequences.shape[0] == 1 and skipping.rows_skipped == 2
    assert batch.loss_norm_mask.sum().item() == 5 + 3  # the normalisers still count the zero-advantage row


def test_a_dynamic_batch_window_with_no_token_in_the_loss_trains_a_zero_loss(tmp_path):
    """Dynamic batching gives training_step no normalisers (stock derives them from the replay buffer): a
    window whose rows are all out of the loss has 0 tokens and 0 sequences there, and 0/0 made the loss NaN."""
    args = resolve_args("--advantage_estimator", "reinforce_rej", "--ext.dropped_rows", "exclude", "--use_kl_loss",
                        "--init_kl_coef", "0.01", "--actor.entropy_coef", "0.001", "--train.dynamic_batch_enable",
                        "--ds.packing_samples")
    trainer = actor_trainer(tmp_path / "model", args)
    buffer = trainer.replay_buffer  # what setup_dynamic_batch computes for one window of excluded rows
    buffer.dynamic_batch_num_tokens, buffer.dynamic_global_batch_size = [0.0], [0.0]
    buffer.dynamic_sample_loss_scale, buffer.dynamic_optimizer_step = [1.0], [1]
    with swapped(torch.cuda, "current_device", lambda: torch.device("cpu")):
        status = trainer.training_step(rows([NONE, NONE], seed=0), 0.0, 0, None)
    assert status["metrics"]["policy_loss"].item() == 0.0 and status["metrics"]["entropy_loss"].item() == 0.0
    (gradients,) = trainer.strategy.step_gradients
    assert all(torch.equal(g, torch.zeros_like(g)) for g in gradients.values())
