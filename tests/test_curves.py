import json
import math

import pytest

from openrlhf_ext.reporting.curves import (
    compare_first_last,
    load_metrics,
    moving_average,
    plot_runs,
    run_summary_table,
)


def test_moving_average_is_trailing_and_handles_the_start():
    assert moving_average([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert moving_average([2.0, 4.0], 20) == [2.0, 3.0]
    with pytest.raises(ValueError):
        moving_average([1.0], 0)


def test_load_metrics_keeps_last_record_per_step_and_skips_bad_lines(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    path.write_text(
        json.dumps({"step": 1, "ext/reward_mean": 0.1}) + "\n"
        + json.dumps({"step": 2, "ext/reward_mean": 0.2}) + "\n"
        + '{"step": 3, "ext/rew'  # a run killed mid-write
        + "\n" + json.dumps({"step": 2, "ext/reward_mean": 0.25}) + "\n"  # resumed run rewrote step 2
    )
    records = load_metrics(path)
    assert [r["step"] for r in records] == [1, 2]
    assert records[1]["ext/reward_mean"] == 0.25
    assert caplog.messages == [f"{path}:3: skipping a malformed metrics line"]


def test_summary_and_plot(tmp_path):
    rows = [{"step": s, "ext/reward_mean": s / 10, "kl": 0.001 * s, "ext/kept_fraction": 0.5,
             "ext/skipped_step": 1.0 if s == 3 else 0.0} for s in range(1, 11)]
    table = run_summary_table(rows)
    # 0.1..0.5 against 0.6..1.0: the most extreme of the 252 splits (and its mirror).
    assert "| ext/reward_mean | 0.3 ± 0.071 | 0.8 ± 0.071 | +0.5, beyond noise (p = 0.0079) |" in table
    assert "| ext/kept_fraction | 0.5 ± 0 | 0.5 ± 0 | +0, within noise (p = 1) |" in table
    assert "1 skipped" in table
    png = plot_runs({"a": rows, "b": rows[:5]}, tmp_path / "curves.png", window=3)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


# Correct counts out of 30 samples a step: ranks 1..10, so that the permutation test's p-value is the
# two-sided Wilcoxon rank-sum probability of the split (m = n = 5; its table: 1, 1, 2, 3, 5, 7 ways
# for rank sums 15..20 of 252).
@pytest.mark.parametrize(
    ("first", "last", "p_value", "words"),
    [
        ([1, 2, 3, 4, 5], [6, 7, 8, 9, 10], 2 / 252, "beyond noise"),  # the most extreme split
        ([1, 2, 3, 4, 6], [5, 7, 8, 9, 10], 4 / 252, "beyond noise"),  # rank sums <= 16 or >= 39
        ([1, 2, 3, 4, 10], [5, 6, 7, 8, 9], 38 / 252, "within noise"),  # rank sums <= 20 or >= 35: 19 + 19
        ([1, 4, 5, 8, 9], [2, 3, 6, 7, 10], 1.0, "within noise"),  # equal sums: every split is as far apart
    ],
)
def test_first_and_last_rates_with_standard_errors_and_a_verdict(first, last, p_value, words):
    counts = [*first, *last]
    comparison = compare_first_last([c / 30 for c in counts])  # not exact in binary: ties need a tolerance
    assert comparison.k == 5
    assert comparison.first == pytest.approx(sum(first) / 150) and comparison.last == pytest.approx(sum(last) / 150)
    # The standard error of a window's mean over its 5 steps: sd(counts) / 30 / sqrt(5).
    for window, se in ((first, comparison.first_se), (last, comparison.last_se)):
        mean = sum(window) / 5
        assert se == pytest.approx(math.sqrt(sum((c - mean) ** 2 for c in window) / 4) / 30 / math.sqrt(5))
    assert comparison.p_value == pytest.approx(p_value)
    assert words in comparison.verdict()


def test_the_issue_s_example_is_within_noise():
    """0.22 -> 0.14 over 32 samples a step (issue 21): steps as varied as binomial noise makes them
    (sd about sqrt(0.18 * 0.82 / 32) = 0.07) cannot tell that change from chance."""
    first = [0.34, 0.16, 0.25, 0.13, 0.22]  # mean 0.22
    last = [0.06, 0.22, 0.09, 0.19, 0.14]  # mean 0.14
    comparison = compare_first_last(first + last)
    assert comparison.first == pytest.approx(0.22) and comparison.last == pytest.approx(0.14)
    # sd 0.082 and 0.067 over each window's 5 steps, over sqrt(5)
    assert comparison.first_se == pytest.approx(0.0367, abs=1e-4) and comparison.last_se == pytest.approx(0.0298, abs=1e-4)
    assert "within noise" in comparison.verdict()


def test_short_runs_compare_windows_that_share_no_step():
    rows = [{"step": s, "ext/correct_fraction": v} for s, v in enumerate([0.1, 0.2, 0.3, 0.4, 0.5, 0.6], start=1)]
    table = run_summary_table(rows)  # 6 steps: 3 against 3
    assert "| metric | first 3 steps | last 3 steps | change |" in table
    assert "| ext/correct_fraction | 0.2 ± 0.058 | 0.5 ± 0.058 | +0.3, within noise (p = 0.1) |" in table  # 2 of 20
    two = run_summary_table(rows[:2])  # a 2-step run: a step each, no error to give
    assert "| metric | first 1 step | last 1 step | change |" in two
    assert "| ext/correct_fraction | 0.1 | 0.2 | too few steps to tell |" in two
    assert "| ext/correct_fraction | 0.1 | 0.1 | too few steps to tell |" in run_summary_table(rows[:1])
    # Four steps: with 2 a window the most extreme split is 2 of 6, never beyond noise.
    assert compare_first_last([0.0, 0.0, 1.0, 1.0]).p_value == pytest.approx(2 / 6)
