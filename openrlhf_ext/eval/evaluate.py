"""Score a model on math benchmarks (docs/evaluation.md) with the project's reward; write JSON + Markdown reports.

:func:`evaluate` generates ``n_samples`` responses per problem (and one greedy response when asked),
scores them with :func:`openrlhf_ext.rewards.score_responses` (the reward the training run uses),
writes every scored response to ``samples.jsonl`` and the metrics of
:func:`openrlhf_ext.eval.metrics.summarize_samples` to ``report.json`` / ``report.md``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from openrlhf_ext.data import apply_template, load_problems, write_jsonl
from openrlhf_ext.eval.generation import Generator, SamplingSettings
from openrlhf_ext.eval.metrics import GREEDY, summarize_samples
from openrlhf_ext.rewards import RewardConfig, score_responses

SAMPLES_FILE = "samples.jsonl"
REPORT_JSON = "report.json"
REPORT_MD = "report.md"


@dataclass(frozen=True)
class EvalSettings:
    """What is generated for each problem (``n_samples`` at temperature 1.0, plus greedy; docs/evaluation.md)."""

    n_samples: int = 4
    temperature: float = 1.0
    max_new_tokens: int = 1024
    top_p: float = 1.0
    greedy: bool = False
    template: str = "chat"
    seed: int = 0
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.n_samples < 1:
            raise ValueError(f"n_samples must be >= 1, got {self.n_samples}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0 for sampling, got {self.temperature} (use greedy for T=0)")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}")
        self.sampling()  # max_new_tokens / top_p are checked where they are used

    def sampling(self) -> SamplingSettings:
        """The sampled responses' generation settings."""
        return SamplingSettings(self.n_samples, self.temperature, self.max_new_tokens, self.top_p, self.seed)


def benchmark_name(source: str) -> str:
    """``math500`` (a name) and ``.../math500.jsonl`` -> ``math500``; ``synthetic:0:8`` -> ``synthetic_0_8``."""
    return source.replace(":", "_") if ":" in source and not Path(source).exists() else Path(source).stem


def load_benchmarks(sources: Sequence[str], problem_key: str = "problem", answer_key: str = "answer",
                    limit: int | None = None) -> dict[str, list[dict[str, str]]]:
    """Problems of each source (a benchmark name, a file, ...: :func:`openrlhf_ext.data.load_problems`) by
    benchmark name (first ``limit`` of each); two sources with the same name are an error, not a silent
    overwrite."""
    benchmarks: dict[str, list[dict[str, str]]] = {}
    for source in sources:
        name = benchmark_name(source)
        if name in benchmarks:
            raise ValueError(f"two eval sources are both named {name!r}; rename one of the files")
        benchmarks[name] = load_problems(source, problem_key, answer_key, limit=limit)
    if not benchmarks:
        raise ValueError("no eval data given")
    return benchmarks


def _scored_records(problems: Sequence[tuple[str, int, Mapping[str, str]]], completions: Sequence[Sequence[Any]],
                    sample_ids: Sequence[int | str], reward: RewardConfig) -> list[dict[str, Any]]:
    rows = [(*problem, sid, c) for problem, per_problem in zip(problems, completions, strict=True)
            for sid, c in zip(sample_ids, per_problem, strict=True)]
    scores = score_responses([c.text for *_, c in rows], [p["answer"] for _, _, p, _, _ in rows], reward)
    return [
        {"benchmark": name, "index": i, "sample": sid, "problem": p["problem"], "answer": p["answer"],
         "response": c.text, "num_tokens": c.num_tokens, "finish_reason": c.finish_reason, "correct": s.correct,
         "reward": s.reward, "format_error": s.format_error, "timed_out": s.timed_out, "error": s.error,
         "extracted": s.answer}
        for (name, i, p, sid, c), s in zip(rows, scores.results, strict=True)
    ]


def evaluate(generator: Generator, benchmarks: Mapping[str, Sequence[Mapping[str, str]]], settings: EvalSettings,
             out_dir: str | Path, reward: RewardConfig | None = None, model: str = "") -> dict[str, Any]:
    """Generate, score and report; returns the report (also written to ``out_dir``).

    All benchmarks go through one generation call (one for the greedy responses), so the backend
    batches across them. ``reward`` defaults to the math reward for ``settings.template`` (0/1, no
    format penalty); ``correct`` of a response is the reward's verdict, whatever its sign convention.
    """
    reward = reward or RewardConfig(template=settings.template)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    problems = [(name, i, p) for name, rows in benchmarks.items() for i, p in enumerate(rows)]
    prompts = [apply_template(p["problem"], settings.template, generator.tokenizer) for _, _, p in problems]
    print(f"[openrlhf_ext.eval] {len(problems)} problems of {len(benchmarks)} benchmark(s) x {settings.n_samples} "
          f"samples{' + greedy' if settings.greedy else ''}", flush=True)
    records = _scored_records(problems, generator.generate(prompts, settings.sampling()), range(settings.n_samples),
                              reward)
    if settings.greedy:
        greedy = generator.generate(prompts, SamplingSettings(1, 0.0, settings.max_new_tokens, seed=settings.seed))
        records += _scored_records(problems, greedy, [GREEDY], reward)
    write_jsonl(records, out_dir / SAMPLES_FILE)
    report = {
        "model": model,
        "backend": generator.name,
        "settings": asdict(settings),
        **summarize_samples(records),
        "samples_file": SAMPLES_FILE,
        "elapsed_s": time.time() - started,
    }
    (out_dir / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out_dir / REPORT_MD).write_text(markdown_report(report) + "\n", encoding="utf-8")
    return report


def shown_ks(k: int) -> list[int]:
    """pass@j columns of the Markdown table: powers of two up to ``k``, and ``k`` (the JSON has all)."""
    ks = [1 << e for e in range(k.bit_length()) if 1 << e <= k]
    return ks if ks[-1] == k else [*ks, k]


def _fmt(value: float | None, digits: int = 1, scale: float = 100.0) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value * scale:.{digits}f}"


def markdown_report(report: Mapping[str, Any]) -> str:
    """Accuracies in percent, one row per benchmark and one for their unweighted average."""
    settings = report["settings"]
    k = settings["n_samples"]
    ks = shown_ks(k)
    greedy = settings["greedy"]
    head = ["benchmark", "problems", f"avg@{k}", *(f"pass@{j}" for j in ks)] + (["greedy"] if greedy else [])
    head += ["len correct", "len wrong", "format errors", "timeouts", "truncated"]
    lines = [
        f"# Evaluation of `{report['model']}`", "",
        f"{k} samples per problem at temperature {settings['temperature']:g} (top-p {settings['top_p']:g}), "
        f"at most {settings['max_new_tokens']} new tokens, template `{settings['template']}`, backend "
        f"{report['backend']}" + (", plus one greedy response per problem" if greedy else "") + ". "
        "Accuracies in %; pass@k is the unbiased estimator; lengths in tokens of the sampled responses; "
        f"counts over the sampled responses. Per-sample records: `{report['samples_file']}`.", "",
        "| " + " | ".join(head) + " |", "|" + "---|" * len(head),
    ]
    for name, m in report["benchmarks"].items():
        row = [name, str(m["n_problems"]), _fmt(m["avg_at_k"]), *(_fmt(m["pass_at_k"][str(j)]) for j in ks)]
        row += [_fmt(m["greedy"]["accuracy"]) if m["greedy"] else "-"] if greedy else []
        row += [_fmt(m["mean_length_correct"], 0, 1.0), _fmt(m["mean_length_wrong"], 0, 1.0),
                str(m["format_errors"]), str(m["timeouts"]), str(m["truncated"])]
        lines.append("| " + " | ".join(row) + " |")
    avg = report["average"]
    row = ["**average**", "", _fmt(avg["avg_at_k"]), *(_fmt(avg["pass_at_k"].get(str(j))) for j in ks)]
    row += [_fmt(avg["greedy_accuracy"])] if greedy else []
    lines.append("| " + " | ".join(row + [""] * 5) + " |")
    lines.append(f"\n{report['elapsed_s']:.0f} s.")
    return "\n".join(lines)
