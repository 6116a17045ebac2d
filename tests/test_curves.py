import json

import pytest

from openrlhf_ext.reporting.curves import head_tail_means, load_metrics, moving_average, plot_runs, run_summary_table


def test_moving_average_is_trailing_and_handles_the_start():
    assert moving_average([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    assert moving_average([2.0, 4.0], 20) == [2.0, 3.0]
    with pytest.raises(ValueError):
        moving_average([1.0], 0)


def test_load_metrics_keeps_last_record_per_step_and_skips_bad_lines(tmp_path, capsys):
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
    assert "malformed" in capsys.readouterr().out


def test_summary_and_plot(tmp_path):
    rows = [{"step": s, "ext/reward_mean": s / 10, "kl": 0.001 * s, "ext/kept_fraction": 0.5,
             "ext/skipped_step": 1.0 if s == 3 else 0.0} for s in range(1, 11)]
    assert head_tail_means(rows, "ext/reward_mean") == pytest.approx((0.3, 0.8))
    table = run_summary_table(rows)
    assert "| ext/reward_mean | 0.3 | 0.8 |" in table and "1 skipped" in table
    png = plot_runs({"a": rows, "b": rows[:5]}, tmp_path / "curves.png", window=3)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
