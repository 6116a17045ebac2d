"""Reward scoring throughput and latency: worker pool (1 and 2 workers) vs a naive in-process loop.

    python benchmarks/bench_reward.py [--data math500,gsm8k_train] [--n 2000] [--limit 1.0] [--adversarial 0.1]

Responses are built from the reference answers of ``--data`` (benchmark names, docs/evaluation.md, or
your files; default MATH500 and GSM8K's train split): half correct, half with a perturbed answer, in
boxed and answer-tag form with prose, and integer answers also in GSM8K's ``####`` form; a fraction is
adversarial output from :mod:`tests/support/reward_corpus.py`, among them inputs that never finish in
math-verify.

Measured in the same run:

* ``naive``: ``math_verify.verify(parse(label), parse(response))`` in a loop on the main thread, with
  math-verify's own SIGALRM timeouts set to the limit (whole seconds; parse and verify each get one).
  Off the main thread, where OpenRLHF calls a reward function, these timeouts refuse to run (shown at
  the end), and without them the adversarial inputs run unbounded;
* ``pool-1`` / ``pool-2``: :func:`openrlhf_ext.rewards.score_responses` with 1 and 2 workers, on the
  full mix and on the clean responses only (overhead without timeouts).

Targets (issue 4): no call spends more than limit + 0.5 s on a worker; 2 workers >= 1.7x the throughput
of 1 on the full mix.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import random
import sys
import threading
import time
from pathlib import Path

from openrlhf_ext.data import DatasetFormatError, load_problems
from openrlhf_ext.rewards import RewardConfig, ScoringPool, percentile, score_responses

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # test and benchmark support
from support.reward_corpus import (  # noqa: E402
    HANGING_OUTPUTS,
    QUICK_BAD_OUTPUTS,
    perturb_answer,
    reference_response,
)


def build_items(data: str, n: int, adversarial: float, seed: int) -> tuple[list, list[str], list[bool]]:
    """``n`` (response, label) pairs from the answers of the comma-separated sources ``data``, and a flag
    per pair saying whether it is adversarial."""
    rng = random.Random(seed)
    rows = []
    for source in data.split(","):
        for p in load_problems(source.strip()):
            # "#### 42" is how a GSM8K-style solution states a whole number, not a LaTeX answer.
            integer = p["answer"].lstrip("-").isdigit()
            rows.append((p["answer"], ("boxed", "answer_tag", "gsm8k") if integer else ("boxed", "answer_tag")))
    bad = list(HANGING_OUTPUTS.values()) + list(QUICK_BAD_OUTPUTS.values())
    n_bad = round(n * adversarial)
    responses, labels, flags = [], [], []
    for i in range(n):
        answer, forms = rng.choice(rows)
        if i < n_bad:
            responses.append(bad[i % len(bad)])
        else:
            shown = answer if rng.random() < 0.5 else perturb_answer(answer)
            responses.append(reference_response(shown, rng.choice(forms)))
        labels.append(answer)
        flags.append(i < n_bad)
    order = list(range(n))
    rng.shuffle(order)
    return [responses[i] for i in order], [labels[i] for i in order], [flags[i] for i in order]


def run_naive(responses: list, labels: list[str], limit: float) -> tuple[float, list[float]]:
    """The naive way: math-verify in a loop on this (main) thread, with its own SIGALRM timeouts."""
    from math_verify import parse, verify

    seconds = max(1, math.ceil(limit))  # math-verify takes whole seconds
    latencies = []
    start = time.perf_counter()
    for response, label in zip(responses, labels, strict=True):
        text = response.decode("utf-8", "replace") if isinstance(response, bytes) else response
        t0 = time.perf_counter()
        gold = parse("$" + label + "$", parsing_timeout=seconds)
        verify(gold, parse(text, parsing_timeout=seconds), timeout_seconds=seconds)
        latencies.append(time.perf_counter() - t0)
    return time.perf_counter() - start, latencies


def naive_off_main_thread() -> str:
    """What the naive way does where OpenRLHF calls a reward function: on a worker thread."""
    from math_verify import parse

    outcome = {}

    def call() -> None:
        try:
            parse(r"\boxed{1}")
            outcome["text"] = "naive math-verify on a thread: ran"
        except ValueError as exc:
            outcome["text"] = f"naive math-verify on a thread (as OpenRLHF calls reward_func): {str(exc)[:70]}..."

    thread = threading.Thread(target=call)
    thread.start()
    thread.join()
    return outcome["text"]


def run_pool(workers: int, responses: list, labels: list[str], limit: float) -> tuple[float, list]:
    config = RewardConfig(timeout_s=limit, workers=workers)
    with ScoringPool(workers=workers) as pool:
        pool.judge_many([r"\boxed{1}"] * workers * 2, ["1"] * workers * 2, None, True, 30.0)  # all started
        start = time.perf_counter()
        batch = score_responses(responses, labels, config, pool=pool)
        return time.perf_counter() - start, batch.results


def line(name: str, n: int, seconds: float, latencies: list[float]) -> str:
    return (
        f"{name:<22} n={n:5d}  {n / seconds:8.1f} resp/s  p50 {1e3 * percentile(latencies, 50):7.2f} ms  "
        f"p99 {1e3 * percentile(latencies, 99):8.2f} ms  max {max(latencies):6.3f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="math500,gsm8k_train", help="benchmark names or files, comma-separated")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--limit", type=float, default=1.0, help="hard limit per response (s)")
    parser.add_argument("--adversarial", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the pool logs every timeout; the counts are printed below

    try:
        responses, labels, flags = build_items(args.data, args.n, args.adversarial, args.seed)
    except DatasetFormatError as err:  # e.g. offline without the datasets cached: pass --data your files
        parser.exit(2, f"{parser.prog}: error: --data: {err}\n")
    clean = [i for i, bad in enumerate(flags) if not bad]
    clean_resp, clean_labels = [responses[i] for i in clean], [labels[i] for i in clean]
    print(f"{args.n} responses, {args.n - len(clean)} adversarial, limit {args.limit}s, {os.cpu_count()} CPUs")

    t_naive, lat_naive = run_naive(responses, labels, args.limit)
    print(line("naive in-process", args.n, t_naive, lat_naive))
    print(f"{'':<22} calls over limit + 0.5 s: {sum(x > args.limit + 0.5 for x in lat_naive)}")
    throughput = {"naive": args.n / t_naive}
    for workers in (1, 2):
        t_all, results = run_pool(workers, responses, labels, args.limit)
        lat = [r.latency_s for r in results]
        print(line(f"pool-{workers}", args.n, t_all, lat))
        timeouts = sum(r.timed_out for r in results)
        over = sum(x > args.limit + 0.5 for x in lat)
        print(f"{'':<22} timeouts {timeouts}, calls over limit + 0.5 s: {over}")
        throughput[workers] = args.n / t_all
        t_clean, res_clean = run_pool(workers, clean_resp, clean_labels, args.limit)
        print(line(f"pool-{workers} (clean only)", len(clean), t_clean, [r.latency_s for r in res_clean]))

    print()
    print(f"ratio pool-2 / pool-1: {throughput[2] / throughput[1]:.2f}x (target >= 1.7x)")
    print(f"ratio pool-1 / naive:  {throughput[1] / throughput['naive']:.2f}x")
    print(f"ratio pool-2 / naive:  {throughput[2] / throughput['naive']:.2f}x")
    print(naive_off_main_thread())


if __name__ == "__main__":
    main()
