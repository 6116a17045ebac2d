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

Usage: ``python benchmarks/bench_advantages.py [--quick]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import os
import sys
import time
from collections.abc import Callable
from types import SimpleNamespace

import torch

import openrlhf_ext  # noqa: F401  (import shims before OpenRLHF's Ray modules)
from openrlhf_ext.algorithms import compute_token_advantages

PROMPT_LEN = 256
ESTIMATORS = ("group_norm", "reinforce_baseline")


def build_rollout(num_prompts: int, n: int, max_len: int, micro_batch: int, seed: int) -> list:
    from openrlhf.trainer.ppo_utils.experience import Experience

    gen = torch.Generator().manual_seed(seed)
    total = num_prompts * n
    rewards = torch.randint(0, 2, (total,), generator=gen).float()
    lengths = torch.randint(1, max_len + 1, (total,), generator=gen)
    order = torch.randperm(total, generator=gen).tolist()
    experiences = []
    for start in range(0, total, micro_batch):
        ids = order[start : start + micro_batch]
        width = int(lengths[ids].max())
        action_mask = torch.arange(width).unsqueeze(0) < lengths[ids].unsqueeze(1)
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


def stock_maker(estimator: str, n: int, kl_coef: float):
    from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker

    args = SimpleNamespace(
        rollout=SimpleNamespace(n_samples_per_prompt=n),
        algo=SimpleNamespace(advantage=SimpleNamespace(estimator=estimator, gamma=1.0, lambd=1.0, no_std_norm=False)),
        reward=SimpleNamespace(clip_range=(-10.0, 10.0)),
    )
    maker = RemoteExperienceMaker.__new__(RemoteExperienceMaker)
    maker.strategy = SimpleNamespace(args=args)
    maker.args = args
    maker.advantage_estimator = estimator
    maker.kl_ctl = SimpleNamespace(value=kl_coef)
    return maker


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(fn: Callable[[], object]) -> tuple[float, float | None, object]:
    """(seconds, peak extra resident MiB or None if the peak cannot be reset, result)."""
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # resets VmHWM to the current RSS
        before = _proc_status_kib("VmRSS")
    except OSError:
        before = None
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    peak = None if before is None else (_proc_status_kib("VmHWM") - before) / 1024
    return seconds, peak, result


# glibc keeps freed heap memory resident and raises its mmap threshold after each large free, so
# RSS would remember the first run's temporaries. A fixed threshold (set before the interpreter
# starts, hence the re-exec) makes every tensor buffer an mmap that is unmapped when freed.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


def main() -> None:
    if sys.platform.startswith("linux") and any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 prompts x 8, lengths up to 1024")
    parser.add_argument("--prompts", type=int, default=512)
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--max-len", type=int, default=4096)
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--kl-coef", type=float, default=0.001)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.quick:
        args.prompts, args.max_len = 64, 1024

    experiences = build_rollout(args.prompts, args.n, args.max_len, args.micro_batch, args.seed)
    size_mib = rollout_bytes(experiences) / 2**20
    tokens = sum(int(e.action_mask.sum()) for e in experiences)
    print(
        f"rollout: {args.prompts} prompts x {args.n} samples, {len(experiences)} micro-batches of {args.micro_batch}, "
        f"{tokens} action tokens, tensors {size_mib:.0f} MiB, torch threads {torch.get_num_threads()}"
    )

    for estimator in ESTIMATORS:
        # stock overwrites fields of the experiences it gets: hand it shallow copies
        copies = [dataclasses.replace(e, info={}) for e in experiences]
        maker = stock_maker(estimator, args.n, args.kl_coef)
        stock_s, stock_mib, stock_out = measure(lambda m=maker, c=copies: m.compute_advantages_and_returns(c))
        ours_s, ours_mib, ours_out = measure(
            lambda est=estimator: compute_token_advantages(
                [e.rewards for e in experiences],
                [e.action_mask for e in experiences],
                [e.index for e in experiences],
                args.n,
                est,
                kl=[e.kl for e in experiences],
                kl_coef=args.kl_coef,
                reward_clip_range=(-10.0, 10.0),
            )
        )
        gap = max(
            float((ours - exp.advantages)[exp.action_mask].abs().max())
            for ours, exp in zip(ours_out.advantages, stock_out, strict=True)
        )

        def mem(mib: float | None) -> str:
            return "n/a" if mib is None else f"{mib:.0f} MiB ({mib / size_mib:.2f}x rollout tensors)"

        print(
            f"{estimator:>18}: stock {stock_s:8.3f} s, peak extra {mem(stock_mib)} | ours {ours_s:7.3f} s, "
            f"peak extra {mem(ours_mib)} | speed-up {stock_s / ours_s:6.1f}x | max |adv diff| {gap:.2e}"
        )
        del copies, stock_out, ours_out


if __name__ == "__main__":
    main()
