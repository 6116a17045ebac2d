"""Time stock OpenRLHF's advantage computation against ours on the same rollout.

The rollout is shaped like a real one: P prompts x n samples, response lengths uniform in
[1, max_len], samples shuffled into micro-batches of ``micro_batch`` (each with its global
``index``, as OpenRLHF's experience maker keeps them), binary rewards, per-token KL in the reward.
For ``group_norm`` and ``reinforce_baseline`` it times

* stock: ``RemoteExperienceMaker.compute_advantages_and_returns`` of OpenRLHF 0.11.2 (a Python
  loop over the time axis of every micro-batch), and
* ours: :func:`openrlhf_ext.algorithms.compute_token_advantages`,

checks that both give the same advantages, and prints times, their ratio and each one's peak
extra resident memory (Linux VmHWM after resetting it through /proc/self/clear_refs), relative
to the bytes of the rollout's tensors.

The float32 gap between the two (a few 1e-6 at 4096 tokens) is stock's own float32 loop
drifting; ``--float64-reference`` also runs stock on a float64 copy of the rollout and prints
both implementations' distance to it.

Usage: ``python benchmarks/bench_advantages.py [--quick]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from openrlhf_ext.algorithms import compute_token_advantages

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test and benchmark support
from support.stock_openrlhf import max_advantage_gap, shuffled_micro_batches, stock_maker  # noqa: E402

PROMPT_LEN = 256
ESTIMATORS = ("group_norm", "reinforce_baseline")


def build_rollout(num_prompts: int, n: int, max_len: int, micro_batch: int, seed: int) -> list:
    from openrlhf.trainer.ppo_utils.experience import Experience

    gen = torch.Generator().manual_seed(seed)
    total = num_prompts * n
    rewards = torch.randint(0, 2, (total,), generator=gen).float()
    lengths = torch.randint(1, max_len + 1, (total,), generator=gen)
    experiences = []
    for ids, action_mask in shuffled_micro_batches(lengths, micro_batch, gen):
        attention_mask = torch.cat([torch.ones(len(ids), PROMPT_LEN, dtype=torch.long), action_mask.long()], dim=1)
        experiences.append(
            Experience(
                sequences=torch.randint(0, 150_000, attention_mask.shape, generator=gen),
                attention_mask=attention_mask,
                action_mask=action_mask,
                action_log_probs=-torch.rand(action_mask.shape, generator=gen) * action_mask,
                kl=torch.rand(action_mask.shape, generator=gen) * 0.01 * action_mask,
                rewards=rewards[ids].clone(),
                response_length=lengths[ids].float(),
                index=list(ids),
                info={},
            )
        )
    return experiences


def rollout_bytes(experiences: list) -> int:
    return sum(
        value.numel() * value.element_size()
        for exp in experiences
        for value in vars(exp).values()
        if isinstance(value, torch.Tensor)
    )


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> int:
    """Reset the process's peak RSS (Linux VmHWM) to the current RSS and return it, in KiB."""
    gc.collect()
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    return _proc_status_kib("VmRSS")


def peak_extra_mib(fn: Callable[[], object]) -> float:
    before = reset_peak_rss()
    result = fn()
    peak = _proc_status_kib("VmHWM")
    del result
    return (peak - before) / 1024


# glibc keeps freed heap memory resident and raises its mmap threshold after large frees, so RSS
# would remember earlier temporaries. The memory pass runs in a child process started with a
# fixed, small mmap threshold: every tensor buffer is then an mmap, unmapped when freed. That
# setting slows small allocations down, so timings come from the parent's normal allocator.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "8192", "MALLOC_TRIM_THRESHOLD_": "65536", "MALLOC_TOP_PAD_": "0"}


def run_ours(experiences: list, estimator: str, args: argparse.Namespace):
    return compute_token_advantages(
        [e.rewards for e in experiences],
        [e.action_mask for e in experiences],
        [e.index for e in experiences],
        args.n,
        estimator,
        kl=[e.kl for e in experiences],
        kl_coef=args.kl_coef,
        reward_clip_range=(-10.0, 10.0),
    )


def run_stock(experiences: list, maker, dtype: torch.dtype = torch.float32):
    # stock overwrites fields of the experiences it gets: hand it shallow copies
    copies = [dataclasses.replace(e, info={}, kl=e.kl.to(dtype), rewards=e.rewards.to(dtype)) for e in experiences]
    return maker.compute_advantages_and_returns(copies)


def memory_pass(experiences: list, makers: dict, args: argparse.Namespace) -> None:
    for estimator in ESTIMATORS:
        stock = peak_extra_mib(lambda est=estimator: run_stock(experiences, makers[est]))
        ours = peak_extra_mib(lambda est=estimator: run_ours(experiences, est, args))
        print(json.dumps({"estimator": estimator, "stock_mib": stock, "ours_mib": ours}))


def measure_memory_in_child() -> dict[str, dict]:
    """Re-run this script with ``--memory-pass`` under MALLOC_ENV; its peaks per estimator."""
    if not sys.platform.startswith("linux"):
        return {}
    child = subprocess.run(
        [sys.executable, __file__, *sys.argv[1:], "--memory-pass"],
        env={**os.environ, **MALLOC_ENV},
        capture_output=True,
        text=True,
        check=True,
    )
    rows = [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]
    return {row["estimator"]: row for row in rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 prompts x 8, lengths up to 1024")
    parser.add_argument("--prompts", type=int, default=512)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-len", type=int, default=4096)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--kl-coef", type=float, default=0.001)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3, help="ours is timed as the mean of this many runs")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory pass (a second stock run)")
    parser.add_argument(
        "--float64-reference", action="store_true", help="also run stock in float64 and report both gaps to it"
    )
    parser.add_argument("--memory-pass", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.max_len = 64, 1024

    experiences = build_rollout(args.prompts, args.n, args.max_len, args.micro_batch, args.seed)
    # built (and OpenRLHF's Ray modules imported) before anything is measured
    makers = {estimator: stock_maker(estimator, n=args.n, kl_coef=args.kl_coef) for estimator in ESTIMATORS}
    if args.memory_pass:
        memory_pass(experiences, makers, args)
        return
    size_mib = rollout_bytes(experiences) / 2**20
    tokens = sum(int(e.action_mask.sum()) for e in experiences)
    print(
        f"rollout: {args.prompts} prompts x {args.n} samples, {len(experiences)} micro-batches of {args.micro_batch}, "
        f"{tokens} action tokens, tensors {size_mib:.0f} MiB, torch threads {torch.get_num_threads()}"
    )
    memory = {} if args.no_memory else measure_memory_in_child()

    for estimator in ESTIMATORS:
        start = time.perf_counter()
        stock_out = run_stock(experiences, makers[estimator])
        stock_s = time.perf_counter() - start
        ours_times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            ours_out = run_ours(experiences, estimator, args)
            ours_times.append(time.perf_counter() - start)
        ours_mean = sum(ours_times) / len(ours_times)
        print(
            f"{estimator:>18}: stock {stock_s:8.3f} s | ours {ours_mean:7.3f} s (mean of {args.repeats}, best "
            f"{min(ours_times):.3f} s) | speed-up {stock_s / ours_mean:6.1f}x | "
            f"max |adv diff| {max_advantage_gap(ours_out.advantages, stock_out):.2e}"
        )
        if estimator in memory:
            row = memory[estimator]
            print(
                f"{'':>18}  peak extra RSS: stock {row['stock_mib']:.0f} MiB ({row['stock_mib'] / size_mib:.2f}x rollout "
                f"tensors), ours {row['ours_mib']:.0f} MiB ({row['ours_mib'] / size_mib:.2f}x)"
            )
        if args.float64_reference:
            reference = run_stock(experiences, makers[estimator], dtype=torch.float64)
            print(
                f"{'':>18}  distance to stock-in-float64: stock {max_advantage_gap([e.advantages for e in stock_out], reference):.2e}, "
                f"ours {max_advantage_gap(ours_out.advantages, reference):.2e}"
            )


if __name__ == "__main__":
    main()
