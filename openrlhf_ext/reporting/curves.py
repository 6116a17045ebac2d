"""Training curves and summaries from ``metrics.jsonl`` (one run or several runs side by side)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

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
            print(f"[openrlhf_ext] {path}:{number}: skipping a malformed metrics line")
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


def head_tail_means(records: Sequence[Mapping], key: str, k: int = 5) -> tuple[float, float]:
    """Mean of ``key`` over the first and the last ``k`` steps (NaN when absent)."""
    _, values = series(records, key)
    if not values:
        return float("nan"), float("nan")
    return sum(values[:k]) / len(values[:k]), sum(values[-k:]) / len(values[-k:])


def run_summary_table(records: Sequence[Mapping], k: int = 5) -> str:
    """Markdown table: each summary metric averaged over the first and the last ``k`` steps."""
    lines = [f"| metric | first {k} steps | last {k} steps |", "|---|---|---|"]
    for key in SUMMARY_KEYS:
        first, last = head_tail_means(records, key, k)
        if math.isnan(first):
            continue
        lines.append(f"| {key} | {first:.4g} | {last:.4g} |")
    skipped = sum(1 for r in records if r.get("ext/skipped_step"))
    lines.append(f"\n{len(records)} steps logged, {skipped} skipped (every sample filtered).")
    return "\n".join(lines)
