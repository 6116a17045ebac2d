"""Training curves and summaries from ``metrics.jsonl`` (one run or several runs side by side)."""

from __future__ import annotations

import itertools
import json
import logging
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"  # written by openrlhf_ext.trainer.ppo_trainer into --ckpt.output_dir

# (metrics.jsonl key, panel title); one panel each.
CURVES: tuple[tuple[str, str], ...] = (
    ("ext/reward_mean", "training reward"),
    ("kl", "KL to reference"),
    ("entropy_loss", "policy entropy"),
    ("ext/response_length_correct", "response length (correct)"),
    ("ext/response_length_wrong", "response length (wrong)"),
    ("ext/kept_fraction", "fraction of samples kept"),
    ("ext/groups_all_correct", "groups all correct"),
    ("ext/groups_all_wrong", "groups all wrong"),
)

SUMMARY_KEYS = ("ext/reward_mean", "ext/correct_fraction", "kl", "ext/response_length", "ext/kept_fraction")


def load_metrics(path: str | Path) -> list[dict]:
    """Records of a metrics.jsonl, one per step, the last record of a step winning (after a resume).

    A malformed line (e.g. cut off by a killed run) is skipped with a warning, never silently.
    """
    by_step: dict[int, dict] = {}
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            by_step[int(record["step"])] = record
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            logger.warning("%s:%d: skipping a malformed metrics line", path, number)
    return [by_step[step] for step in sorted(by_step)]


def series(records: Sequence[Mapping], key: str) -> tuple[list[int], list[float]]:
    steps, values = [], []
    for record in records:
        value = record.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            steps.append(int(record["step"]))
            values.append(float(value))
    return steps, values


def moving_average(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average (the first points average what is there), as the papers smooth curves."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_runs(runs: Mapping[str, Sequence[Mapping]], out_png: str | Path, window: int = 1,
              curves: Sequence[tuple[str, str]] = CURVES) -> Path:
    """One PNG with a panel per metric and a line per run, smoothed with ``window``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(key, title) for key, title in curves if any(series(r, key)[0] for r in runs.values())]
    if not panels:
        raise ValueError("no plottable metric in the given runs")
    cols = 2 if len(panels) > 1 else 1
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.2 * rows), squeeze=False)
    for ax, (key, title) in zip(axes.flat, panels, strict=False):
        for label, records in runs.items():
            steps, values = series(records, key)
            if steps:
                ax.plot(steps, moving_average(values, window), label=label, marker="o" if len(steps) < 15 else None)
        ax.set_title(title + (f" (moving avg {window})" if window > 1 else ""))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=100)
    plt.close(fig)
    return out_png


NOISE_LEVEL = 0.05  # a change is "beyond noise" when a two-sided test gives p below this


@dataclass(frozen=True)
class Comparison:
    """A metric over the first and the last ``k`` steps of a run: each window's mean and standard
    error, and the two-sided p-value of their difference (NaN where there is too little to tell)."""

    k: int
    first: float
    first_se: float
    last: float
    last_se: float
    p_value: float

    def verdict(self) -> str:
        if math.isnan(self.p_value):
            return "too few steps to tell"
        change = self.last - self.first
        words = "beyond noise" if self.p_value < NOISE_LEVEL else "within noise"
        return f"{change:+.3g}, {words} (p = {self.p_value:.2g})"


def window_size(steps: int, k: int) -> int:
    """``k``, or fewer when the run has under ``2k`` steps: the windows share no step (one step:
    it is both)."""
    return min(k, steps // 2) if steps > 1 else steps


def compare_first_last(values: Sequence[float], k: int = 5) -> Comparison:
    """The first ``k`` against the last ``k`` of a metric's per-step values (see :func:`window_size`).

    Unit of noise: the **step**. A step's value comes from a fresh batch of prompts; its samples are
    not independent draws (the ``n`` responses to one prompt share its difficulty), and the records
    do not hold per-prompt counts to cluster by prompt. A binomial error over the ``B * n`` samples
    would treat them as independent and understate the noise (by the factor ``sqrt(1 + (n - 1) rho)``
    for a within-prompt correlation ``rho``: about 2 for n = 8 and rho = 0.4). Each step is one
    cluster of prompt groups instead, so the standard error of a window's mean is ``s / sqrt(k)``
    over its steps (the cluster-robust error of the pooled rate when every step has as many samples),
    and it holds for every metric, not only rates.

    Whether the change is beyond noise: a two-sided permutation test over the ``2k`` steps, exact
    (every one of the ``C(2k, k)`` splits into two windows: 252 for k = 5). With five steps a window,
    the standard errors are themselves uncertain (4 degrees of freedom), which a normal test would
    ignore; the permutation test assumes only that, without a change, the steps are exchangeable.
    Slow drift within a window counts as noise, so the test is on the cautious side.
    """
    k = window_size(len(values), k)
    if k == 0:
        return Comparison(k, math.nan, math.nan, math.nan, math.nan, math.nan)
    first, last = list(values[:k]), list(values[-k:])

    def mean_se(window: list[float]) -> tuple[float, float]:
        se = statistics.stdev(window) / math.sqrt(k) if k > 1 else math.nan
        return statistics.fmean(window), se

    (first_mean, first_se), (last_mean, last_se) = mean_se(first), mean_se(last)
    return Comparison(k, first_mean, first_se, last_mean, last_se, _permutation_p(first + last, k) if k > 1 else math.nan)


def _permutation_p(pooled: list[float], k: int) -> float:
    """Share of the splits of ``pooled`` into two windows of ``k`` whose sums differ at least as much
    as the observed split's (its first ``k`` against the rest), itself included."""
    total = math.fsum(pooled)
    observed = abs(total - 2 * math.fsum(pooled[:k]))
    tolerance = 1e-9 * max(1.0, math.fsum(abs(v) for v in pooled))  # the observed split, summed in another order
    splits = itertools.combinations(range(len(pooled)), k)
    extreme = [abs(total - 2 * math.fsum(pooled[i] for i in split)) >= observed - tolerance for split in splits]
    return sum(extreme) / len(extreme)


def run_summary_table(records: Sequence[Mapping], k: int = 5) -> str:
    """Markdown table: each summary metric over the first and the last ``k`` steps, each with its
    standard error, and whether the change is beyond noise (see :func:`compare_first_last`)."""
    shown = window_size(len(records), k)
    steps = "step" if shown == 1 else "steps"
    lines = [f"| metric | first {shown} {steps} | last {shown} {steps} | change |", "|---|---|---|---|"]

    def rate(mean: float, se: float) -> str:
        return f"{mean:.4g}" if math.isnan(se) else f"{mean:.4g} ± {se:.2g}"

    for key in SUMMARY_KEYS:
        c = compare_first_last(series(records, key)[1], k)
        if c.k == 0:
            continue
        label = key if c.k == shown else f"{key} (steps that log it: {c.k} each)"
        lines.append(f"| {label} | {rate(c.first, c.first_se)} | {rate(c.last, c.last_se)} | {c.verdict()} |")
    skipped = sum(1 for r in records if r.get("ext/skipped_step"))
    lines.append(f"\n± one standard error over steps (each step a fresh batch of prompts); change: two-sided "
                 f"permutation test over the steps of both windows, beyond noise at p < {NOISE_LEVEL:g}.")
    lines.append(f"{len(records)} steps logged, {skipped} skipped (every sample filtered).")
    return "\n".join(lines)
