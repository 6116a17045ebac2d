"""Ablation sweep: one training run per (estimator, seed), resumable, and a report comparing them.

The comparison of Fig. 4 / Table 1 of "A Minimalist Approach to LLM Reasoning" (arXiv:2504.11343) in one
command: :func:`plan_runs` lays the runs out as ``<out>/<estimator>-seed<S>``, :func:`run_flags`
gives each the same training flags plus its estimator, seed, output folder and step count,
:func:`is_finished` tells a finished run (``sweep_done.json`` written after a successful run whose
metrics have every step and whose model was saved) from one to (re)start, and
:func:`write_sweep_report` plots the per-step metrics of docs/algorithms.md, "Metrics" (moving average
against step, one line per estimator, averaged over seeds) and tabulates the final numbers (mean ± std over seeds).
"""

from __future__ import annotations

import hashlib
import json
import math
import statistics
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from openrlhf_ext.reporting.curves import CURVES, METRICS_FILE, load_metrics, plot_runs, series

# The estimators of the issue / README table (critic-free); a sweep may name any preset.
DEFAULT_ESTIMATORS = (
    "raft", "raft_pp", "reinforce_raw", "reinforce_rej", "reinforce_rej_wrong", "reinforce_rej_correct",
    "reinforce_mean_zero", "reinforce_rej_std", "group_norm", "dr_grpo", "lite_ppo", "reinforce",
    "reinforce_baseline",
)
# Training settings the sweep sets per run; giving them among the training flags is an error.
RESERVED_DESTS = {
    "algo.advantage.estimator": "--estimators",
    "train.seed": "--seeds",
    "ckpt.output_dir": "--output_dir",
    "ckpt.path": "--output_dir",
    "ext.num_prompts": "--steps",
    "data.max_samples": "--steps",
    "train.num_episodes": "--steps",
}
DONE_FILE = "sweep_done.json"
STARTED_FILE = "sweep_run.json"
# What a run printed on its terminal (its full log is <run>/train.log, written by the run itself).
CONSOLE_FILE = "console.log"
EVAL_DIR = "eval"

_TITLES = dict(CURVES)
# One PNG per metric group of the issue; panels are (metrics.jsonl key, title).
FIGURES: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    # Runs of one sweep may score ±1 or 0/1 (the demo signs the rewards of no-baseline modes): the
    # fraction correct is the panel comparable across them.
    ("reward", "Training reward and accuracy", (("ext/reward_mean", _TITLES["ext/reward_mean"]),
                                                ("ext/correct_fraction", "fraction of responses correct"))),
    ("kl", "KL to the reference model", (("kl", _TITLES["kl"]),)),
    ("entropy", "Policy entropy", (("entropy_loss", _TITLES["entropy_loss"]),)),
    ("length", "Response length, correct vs wrong (tokens)",
     tuple((k, _TITLES[k]) for k in ("ext/response_length_correct", "ext/response_length_wrong"))),
    ("groups", "Prompt groups all correct / all wrong, fraction of samples kept",
     tuple((k, _TITLES[k]) for k in ("ext/groups_all_correct", "ext/groups_all_wrong", "ext/kept_fraction"))),
)
# Final-table columns from the training metrics: (key, header, over the last steps only?).
TABLE_METRICS = (
    ("ext/reward_mean", "reward", True),
    ("ext/correct_fraction", "correct", True),
    ("ext/kept_fraction", "kept", False),
    ("ext/groups_all_correct", "all-correct", False),
    ("ext/groups_all_wrong", "all-wrong", False),
)


@dataclass(frozen=True)
class Run:
    estimator: str
    seed: int
    run_dir: Path

    @property
    def label(self) -> str:
        return f"{self.estimator}-seed{self.seed}"


def parse_list(text: str, name: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError(f"{name}: empty list")
    if len(set(items)) != len(items):
        raise ValueError(f"{name}: repeated entries in {text!r}")
    return items


def plan_runs(estimators: Sequence[str], seeds: Sequence[int], out_dir: str | Path) -> list[Run]:
    """Every (estimator, seed), estimators outermost (all seeds of an estimator run back to back)."""
    from openrlhf_ext.algorithms.config import PRESETS

    unknown = [e for e in estimators if e not in PRESETS]
    if unknown:
        raise ValueError(f"--estimators: unknown {unknown}; valid: {', '.join(PRESETS)}")
    out = Path(out_dir).resolve()
    return [Run(e, int(s), out / f"{e}-seed{s}") for e in estimators for s in seeds]


def reserved_settings(train_flags: Sequence[str]) -> list[str]:
    """Settings (dests) that ``train_flags`` set, in any spelling, although the sweep sets them per run."""
    from openrlhf_ext.cli.resolve import explicit_dests
    from openrlhf_ext.cli.train_config import build_parser

    return sorted(explicit_dests(build_parser(), train_flags) & set(RESERVED_DESTS))


def steps_flags(config: SimpleNamespace, steps: int) -> list[str]:
    """Flags that make a run last ``steps`` steps (one rollout batch each, one episode).

    The embedded generated problems are sized with ``--ext.num_prompts``; a prompt file is cut with
    ``--data.max_samples`` (it must hold ``steps x --rollout.batch_size`` prompts).
    """
    from openrlhf_ext.job.inputs import EMBEDDED_PROMPTS

    if steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    prompts = steps * config.rollout.batch_size
    if config.data.prompt_dataset == EMBEDDED_PROMPTS:
        return ["--ext.num_prompts", str(prompts)]
    return ["--data.max_samples", str(prompts)]


def run_flags(run: Run, train_flags: Sequence[str], step_flags: Sequence[str]) -> list[str]:
    return [*train_flags, *step_flags, "--algo.advantage.estimator", run.estimator, "--train.seed", str(run.seed),
            "--ckpt.output_dir", str(run.run_dir), "--ckpt.path", str(run.run_dir / "ckpt")]


def train_command(flags: Sequence[str], ray_address: str | None = None, working_dir: str = ".") -> list[str]:
    """A subprocess running the training CLI here, or submitting it as a Ray job to ``ray_address``
    (``ray job submit`` waits for the job; the run folder must be on storage both sides see)."""
    module = ["-m", "openrlhf_ext.cli.train_ppo_ray", *flags]
    if ray_address is None:
        return [sys.executable, *module]
    ray_bin = Path(sys.executable).with_name("ray")
    return [str(ray_bin) if ray_bin.exists() else "ray", "job", "submit", "--address", ray_address,
            "--working-dir", working_dir, "--", "python", *module]


def fingerprint(flags: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(flags)).encode()).hexdigest()[:16]


def model_saved(run_dir: Path) -> bool:
    weights = any(run_dir.glob("*.safetensors")) or any(run_dir.glob("*.bin"))
    return (run_dir / "config.json").exists() and weights


def logged_steps(run_dir: Path) -> int:
    path = run_dir / METRICS_FILE
    return len(load_metrics(path)) if path.exists() else 0


class SweepStateError(RuntimeError):
    """A run folder holds a run made with other flags."""


def _check_same_flags(run_dir: Path, marker: str, fp: str) -> None:
    path = run_dir / marker
    if path.exists() and json.loads(path.read_text())["fingerprint"] != fp:
        raise SweepStateError(
            f"{run_dir} holds a run made with other training flags (see {path}); give another --output_dir "
            "or delete that folder"
        )


def is_finished(run_dir: Path, steps: int, fp: str) -> bool:
    """True when ``run_dir`` holds a finished run of these flags; raises :class:`SweepStateError`
    when it holds a run (finished or not) of other flags, which resuming would mix up."""
    _check_same_flags(run_dir, STARTED_FILE, fp)
    _check_same_flags(run_dir, DONE_FILE, fp)
    return (run_dir / DONE_FILE).exists() and logged_steps(run_dir) >= steps and model_saved(run_dir)


def mark_started(run_dir: Path, flags: Sequence[str]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / STARTED_FILE).write_text(json.dumps({"fingerprint": fingerprint(flags), "flags": list(flags)},
                                                   indent=1) + "\n")


def finish_run(run_dir: Path, flags: Sequence[str], steps: int, elapsed_s: float) -> str | None:
    """After the training process exited 0: write the done marker, or say why the run is incomplete."""
    got = logged_steps(run_dir)
    if got < steps:
        return (f"the run logged {got} of {steps} steps (a prompt file with fewer than steps x --rollout.batch_size "
                "prompts, or dynamic filtering, ends it early)")
    if not model_saved(run_dir):
        return f"no saved model in {run_dir}"
    (run_dir / DONE_FILE).write_text(json.dumps({"fingerprint": fingerprint(flags), "steps": got,
                                                 "elapsed_s": round(elapsed_s, 1)}) + "\n")
    return None


# ---- aggregation and the report -----------------------------------------------------------------


def mean_over_seeds(runs: Sequence[Sequence[Mapping[str, Any]]], keys: Sequence[str]) -> list[dict[str, Any]]:
    """Per-step records whose ``keys`` are the mean over the runs logging a finite value at that step."""
    by_step: dict[int, dict[str, list[float]]] = {}
    for records in runs:
        for key in keys:
            for step, value in zip(*series(records, key), strict=True):
                by_step.setdefault(step, {}).setdefault(key, []).append(value)
    return [{"step": step, **{k: sum(v) / len(v) for k, v in values.items()}} for step, values in sorted(by_step.items())]


def run_summary(records: Sequence[Mapping[str, Any]], tail: int) -> dict[str, float]:
    """Table values of one run: the TABLE_METRICS over the last ``tail`` steps or over all steps;
    NaN when the metric was never logged."""
    out = {}
    for key, _, last_only in TABLE_METRICS:
        _, values = series(records, key)
        values = values[-tail:] if last_only else values
        out[key] = sum(values) / len(values) if values else math.nan
    out["steps"] = float(len(records))
    out["skipped"] = float(sum(1 for r in records if r.get("ext/skipped_step")))
    return out


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for one value) of the finite values; NaN mean if none."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, None
    return statistics.fmean(finite), (statistics.stdev(finite) if len(finite) > 1 else None)


def format_mean_std(values: Sequence[float], scale: float = 1.0, digits: int = 3) -> str:
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "-"
    text = f"{mean * scale:.{digits}f}"
    return text if std is None else f"{text} ± {std * scale:.{digits}f}"


def eval_scores(report: Mapping[str, Any]) -> dict[str, float]:
    """avg@k per benchmark and their average, from an evaluation ``report.json``."""
    scores = {name: m["avg_at_k"] for name, m in report["benchmarks"].items()}
    scores["average"] = report["average"]["avg_at_k"]
    return scores


def sweep_summary_table(rows: Mapping[str, Sequence[dict[str, float]]], tail: int,
                  evals: Mapping[str, Sequence[Mapping[str, float]]] | None = None, eval_k: int | None = None) -> str:
    """Markdown table, one row per estimator, cells mean ± std over its seeds; eval columns (avg@k in %)
    when ``evals`` has any."""
    benchmarks: list[str] = []
    for reports in (evals or {}).values():
        for scores in reports:
            benchmarks += [b for b in scores if b not in benchmarks]
    head = ["estimator", "seeds", "steps", *(f"{h} (last {tail})" if last else h for _, h, last in TABLE_METRICS)]
    head += [f"{b} avg@{eval_k}" for b in benchmarks]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for estimator, summaries in rows.items():
        steps = sorted({int(s["steps"]) for s in summaries})
        cells = [estimator, str(len(summaries)), f"{steps[0]}" if len(steps) == 1 else f"{steps[0]}-{steps[-1]}"]
        cells += [format_mean_std([s[key] for s in summaries]) for key, _, _ in TABLE_METRICS]
        reports = (evals or {}).get(estimator, [])
        cells += [format_mean_std([r.get(b, math.nan) for r in reports], scale=100.0, digits=1) for b in benchmarks]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_figures(per_estimator: Mapping[str, Sequence[Mapping[str, Any]]], out_dir: Path,
                 window: int) -> list[tuple[str, str | None]]:
    """One PNG per FIGURES group; ``(title, file name or None when no run logged those metrics)``."""
    made = []
    for name, title, panels in FIGURES:
        png = out_dir / f"sweep_{name}.png"
        try:
            made.append((title, plot_runs(per_estimator, png, window=window, curves=panels).name))
        except ValueError:  # no run logged any metric of this group (e.g. KL with --init_kl_coef 0)
            png.unlink(missing_ok=True)  # a figure of an earlier report would contradict this one
            made.append((title, None))
    return made


def write_sweep_report(out_dir: Path, runs: Sequence[Run], records: Mapping[Run, Sequence[Mapping[str, Any]]],
                 window: int, tail: int, evals: Mapping[Run, Mapping[str, float]] | None = None,
                 eval_k: int | None = None, failures: Mapping[Run, str] | None = None,
                 command: str = "") -> Path:
    """``report.md`` with the figures and the final table; returns its path."""
    estimators = list(dict.fromkeys(r.estimator for r in runs))
    keys = sorted({k for _, _, panels in FIGURES for k, _ in panels})
    per_estimator = {e: mean_over_seeds([records[r] for r in runs if r.estimator == e and r in records], keys)
                     for e in estimators}
    per_estimator = {e: recs for e, recs in per_estimator.items() if recs}
    longest = max((len(recs) for recs in per_estimator.values()), default=1)
    window, tail = max(1, min(window, longest)), max(1, min(tail, longest))
    figures = plot_figures(per_estimator, out_dir, window) if per_estimator else []
    rows = {e: [run_summary(records[r], tail) for r in runs if r.estimator == e and r in records] for e in estimators}
    rows = {e: s for e, s in rows.items() if s}
    eval_rows = {e: [evals[r] for r in runs if r.estimator == e and r in (evals or {})] for e in estimators}
    seeds = sorted({r.seed for r in runs})
    lines = [
        "# Ablation sweep", "",
        f"{len(estimators)} estimator(s) x {len(seeds)} seed(s) ({', '.join(map(str, seeds))}); curves: moving "
        f"average over {window} step(s), mean over seeds; table: mean ± std over seeds"
        f"{', training metrics over all steps unless marked' if rows else ''}.",
    ]
    if command:
        lines += ["", "```", command, "```"]
    for title, png in figures:
        lines += ["", f"## {title}", "", f"![{title}]({png})" if png else "(no run logged these metrics)"]
    lines += ["", "## Final numbers", ""]
    lines.append(sweep_summary_table(rows, tail, eval_rows if evals else None, eval_k) if rows else "(no finished run)")
    if evals:
        lines.append(f"\nEval columns: avg@{eval_k} in % of each run's final model ({EVAL_DIR}/report.md in its folder).")
    if failures:
        lines += ["", "## Failed runs", ""] + [f"- `{r.label}`: {why}" for r, why in failures.items()]
    lines += ["", "Runs: " + ", ".join(f"`{r.run_dir.name}`" for r in runs if r in records)]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
