"""Evaluation metrics of docs/evaluation.md: avg@k, unbiased pass@k, greedy accuracy, per-benchmark summaries.

Pure functions over per-sample records (plain dicts, see :data:`SAMPLE_FIELDS`), so every number of a
report can be recomputed from the ``samples.jsonl`` it was made from.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# Keys of one per-sample record (one generated response, scored).
SAMPLE_FIELDS = (
    "benchmark", "index", "sample", "problem", "answer", "response", "num_tokens", "finish_reason",
    "correct", "reward", "format_error", "timed_out", "error", "extracted",
)
GREEDY = "greedy"  # the ``sample`` value of the temperature-0 response of a problem


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem with ``c`` correct among ``n`` samples: ``1 - C(n-c, k) / C(n, k)``
    (Chen et al. 2021, Codex, arXiv:2107.03374).

    Computed as ``1 - prod_{i=n-c+1..n} (1 - k/i)``, which equals the ratio of binomials without
    forming them (they overflow floats for n in the hundreds).
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got c={c}, n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if n - c < k:  # every k-subset holds a correct sample
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def avg_at_k(correct_per_problem: Sequence[Sequence[bool]]) -> float:
    """avg@k: mean over problems of the fraction of the ``k`` samples that are correct."""
    if not correct_per_problem:
        raise ValueError("avg@k of no problems")
    return sum(sum(map(bool, row)) / len(row) for row in correct_per_problem) / len(correct_per_problem)


def mean_pass_at_k(correct_per_problem: Sequence[Sequence[bool]], k: int) -> float:
    """pass@k of a benchmark: :func:`pass_at_k` averaged over its problems."""
    if not correct_per_problem:
        raise ValueError("pass@k of no problems")
    return sum(pass_at_k(len(row), sum(map(bool, row)), k) for row in correct_per_problem) / len(correct_per_problem)


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def benchmark_metrics(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Metrics of one benchmark from its per-sample records.

    Sampled responses (``sample`` an int) give avg@k, pass@1..k, the mean length in tokens of the
    correct and of the wrong responses, and the format-error / timeout / scoring-error / truncation
    counts; the ``greedy`` responses give the same counts and the greedy accuracy, apart. Every
    problem must have the same number of samples ``k`` (raises otherwise).
    """
    sampled: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    greedy: list[Mapping[str, Any]] = []
    for record in records:
        (greedy if record["sample"] == GREEDY else sampled[int(record["index"])]).append(record)
    if not sampled:
        raise ValueError("no sampled responses to score")
    sizes = {len(rows) for rows in sampled.values()}
    if len(sizes) != 1:
        raise ValueError(f"problems have different numbers of samples: {sorted(sizes)}")
    k = sizes.pop()
    rows = [[bool(r["correct"]) for r in sampled[i]] for i in sorted(sampled)]
    flat = [r for i in sorted(sampled) for r in sampled[i]]
    out: dict[str, Any] = {
        "n_problems": len(rows),
        "n_samples": k,
        "avg_at_k": avg_at_k(rows),
        "pass_at_k": {str(j): mean_pass_at_k(rows, j) for j in range(1, k + 1)},
        "mean_length_correct": _mean([r["num_tokens"] for r in flat if r["correct"]]),
        "mean_length_wrong": _mean([r["num_tokens"] for r in flat if not r["correct"]]),
        **_counts(flat),
        "greedy": None,
    }
    if greedy:
        out["greedy"] = {"accuracy": sum(bool(r["correct"]) for r in greedy) / len(greedy),
                         "n_problems": len(greedy), **_counts(greedy)}
    return out


def _counts(records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    return {
        "n_responses": len(records),
        "format_errors": sum(bool(r["format_error"]) for r in records),
        "timeouts": sum(bool(r["timed_out"]) for r in records),
        "scoring_errors": sum(r["error"] is not None and not r["timed_out"] for r in records),
        "truncated": sum(r["finish_reason"] == "length" for r in records),
    }


def average_over_benchmarks(per_benchmark: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Unweighted mean over benchmarks (the "average" column of the papers' tables) of avg@k, of
    pass@j for each j every benchmark has, and of the greedy accuracy when every benchmark has one."""
    if not per_benchmark:
        raise ValueError("no benchmarks to average")
    metrics = list(per_benchmark.values())
    common_k = set.intersection(*(set(m["pass_at_k"]) for m in metrics))
    greedy = [m["greedy"]["accuracy"] for m in metrics if m["greedy"] is not None]
    return {
        "n_benchmarks": len(metrics),
        "avg_at_k": sum(m["avg_at_k"] for m in metrics) / len(metrics),
        "pass_at_k": {j: sum(m["pass_at_k"][j] for m in metrics) / len(metrics) for j in sorted(common_k, key=int)},
        "greedy_accuracy": sum(greedy) / len(greedy) if len(greedy) == len(metrics) else None,
    }


def summarize_samples(records: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """``{"benchmarks": {name: benchmark_metrics}, "average": average_over_benchmarks}`` of the records,
    benchmarks in order of first appearance."""
    by_benchmark: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        by_benchmark.setdefault(record["benchmark"], []).append(record)
    per_benchmark = {name: benchmark_metrics(rows) for name, rows in by_benchmark.items()}
    return {"benchmarks": per_benchmark, "average": average_over_benchmarks(per_benchmark)}
