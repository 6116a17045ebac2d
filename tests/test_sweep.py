"""Ablation sweep: run layout, resumability, aggregation over seeds, the report, and a real CPU sweep."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from helpers import HALF_FILTERED_REWARD, MATH_DATA, read_metrics, small_run_flags

from openrlhf_ext.cli.sweep import sweep
from openrlhf_ext.cli.sweep_plan import (
    DONE_FILE,
    Run,
    SweepStateError,
    fingerprint,
    finish_run,
    format_mean_std,
    is_finished,
    mark_started,
    mean_over_seeds,
    plan_runs,
    reserved_settings,
    run_summary,
    steps_flags,
    sweep_summary_table,
    train_command,
    write_sweep_report,
)
from openrlhf_ext.cli.train_config import resolve_train_config

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_metrics(run_dir: Path, rows: list[dict]) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def fake_model(run_dir: Path) -> None:
    (run_dir / "config.json").write_text("{}")
    (run_dir / "model.safetensors").write_bytes(b"weights")


# ---- aggregation ----------------------------------------------------------------------------------


def test_mean_over_seeds_averages_what_each_step_has():
    a = [{"step": 1, "r": 0.0, "kl": None}, {"step": 2, "r": 1.0, "kl": 0.2}]
    b = [{"step": 1, "r": 0.5, "kl": 0.1}, {"step": 2, "r": 0.0}, {"step": 3, "r": 0.25, "kl": float("nan")}]
    merged = mean_over_seeds([a, b], ["r", "kl"])
    assert merged == [{"step": 1, "r": 0.25, "kl": 0.1}, {"step": 2, "r": 0.5, "kl": 0.2}, {"step": 3, "r": 0.25}]


def test_run_summary_tail_all_steps_and_missing_metrics():
    rows = [{"step": s, "ext/reward_mean": s / 10, "ext/kept_fraction": 0.5 if s % 2 else 1.0,
             "ext/skipped_step": float(s == 4)} for s in range(1, 7)]
    summary = run_summary(rows, tail=3)
    assert summary["ext/reward_mean"] == pytest.approx((0.4 + 0.5 + 0.6) / 3)  # last 3 steps
    assert summary["ext/kept_fraction"] == pytest.approx(0.75)  # all 6 steps
    assert math.isnan(summary["ext/groups_all_wrong"])
    assert (summary["steps"], summary["skipped"]) == (6.0, 1.0)


def test_mean_std_formatting():
    assert format_mean_std([0.2, 0.4]) == "0.300 ± 0.141"  # sample std: sqrt(((-.1)^2 + .1^2) / 1)
    assert format_mean_std([0.25]) == "0.250"
    assert format_mean_std([float("nan")]) == "-"
    assert format_mean_std([0.5, float("nan")], scale=100, digits=1) == "50.0"


def test_summary_table_rows_and_eval_columns():
    s1 = {"ext/reward_mean": 0.5, "ext/correct_fraction": 0.75, "ext/kept_fraction": 1.0, "ext/groups_all_correct": 0.0,
          "ext/groups_all_wrong": 0.25, "steps": 4.0, "skipped": 0.0}
    s2 = {**s1, "ext/reward_mean": 0.7}
    table = sweep_summary_table({"raft": [s1, s2]}, tail=2, evals={"raft": [{"math500": 0.1, "average": 0.1},
                                                                      {"math500": 0.3, "average": 0.3}]}, eval_k=4)
    header, _, row = table.splitlines()
    assert header.startswith("| estimator | seeds | steps | reward (last 2) | correct (last 2) | kept |")
    assert header.endswith("| math500 avg@4 | average avg@4 |")
    assert row == ("| raft | 2 | 4 | 0.600 ± 0.141 | 0.750 ± 0.000 | 1.000 ± 0.000 | 0.000 ± 0.000 | 0.250 ± 0.000 "
                   "| 20.0 ± 14.1 | 20.0 ± 14.1 |")


def test_write_report_figures_table_and_missing_metric_groups(tmp_path):
    runs = plan_runs(["raft", "group_norm"], [1, 2], tmp_path)
    records = {}
    for run in runs:
        bias = 0.1 * run.seed + (0.3 if run.estimator == "group_norm" else 0.0)
        records[run] = [{"step": s, "ext/reward_mean": bias + 0.05 * s, "entropy_loss": 1.0 - 0.01 * s,
                         "ext/response_length_correct": 20 + s, "ext/response_length_wrong": 30 - s,
                         "ext/groups_all_correct": 0.1, "ext/groups_all_wrong": 0.2, "ext/kept_fraction": 0.7}
                        for s in range(1, 6)]
    failed = Run("raft", 3, tmp_path / "raft-seed3")
    (tmp_path / "sweep_kl.png").write_bytes(PNG_MAGIC)  # left by an earlier report
    report = write_sweep_report(tmp_path, [*runs, failed], records, window=20, tail=2, failures={failed: "exit code 1"},
                          command="python -m openrlhf_ext.cli.sweep --steps 5")
    text = report.read_text()
    for name in ("reward", "entropy", "length", "groups"):
        png = tmp_path / f"sweep_{name}.png"
        assert f"]({png.name})" in text and png.read_bytes()[:8] == PNG_MAGIC
    assert not (tmp_path / "sweep_kl.png").exists() and "(no run logged these metrics)" in text  # no KL logged
    assert "moving average over 5 step(s)" in text  # window 20 clipped to the 5 logged steps
    # raft: seeds 1 and 2 -> last-2 reward means 0.1+0.225 and 0.2+0.225
    assert "| raft | 2 | 5 | 0.375 ± 0.071 |" in text and "| group_norm | 2 | 5 | 0.675 ± 0.071 |" in text
    assert "- `raft-seed3`: exit code 1" in text
    text = write_sweep_report(tmp_path, runs, records, window=3, tail=50).read_text()
    assert "reward (last 5)" in text and "moving average over 3 step(s)" in text  # tail clipped to the run too


# ---- run layout, flags and resumability -----------------------------------------------------------


def test_plan_runs_layout_and_unknown_estimator(tmp_path):
    runs = plan_runs(["raft", "dr_grpo"], [1, 2], tmp_path / "sw")
    assert [r.run_dir.name for r in runs] == ["raft-seed1", "raft-seed2", "dr_grpo-seed1", "dr_grpo-seed2"]
    with pytest.raises(ValueError, match="unknown"):
        plan_runs(["raft", "grpo"], [1], tmp_path)


def test_finish_and_resume_state(tmp_path):
    run_dir = tmp_path / "raft-seed1"
    flags = ["--pretrain", "m", "--train.seed", "1"]
    fp = fingerprint(flags)
    mark_started(run_dir, flags)
    write_metrics(run_dir, [{"step": 1}, {"step": 2}])
    assert not is_finished(run_dir, 2, fp)  # no marker yet: (re)start
    assert "no saved model" in finish_run(run_dir, flags, 2, 1.0)
    fake_model(run_dir)
    assert "logged 2 of 3 steps" in finish_run(run_dir, flags, 3, 1.0)
    assert not (run_dir / DONE_FILE).exists()
    assert finish_run(run_dir, flags, 2, 1.0) is None
    assert is_finished(run_dir, 2, fp)
    with pytest.raises(SweepStateError, match="other training flags"):
        is_finished(run_dir, 2, fingerprint([*flags, "--actor.adam.lr", "1e-5"]))


def test_train_flags_the_sweep_owns_are_refused_in_any_spelling():
    assert reserved_settings(["--pretrain", "m", "--n_samples_per_prompt", "4"]) == []
    assert reserved_settings(["--save_path", "x", "--seed", "3"]) == ["ckpt.output_dir", "train.seed"]
    assert reserved_settings(["--ckpt.output_dir=x", "--max_samples", "9", "--advantage_estimator", "raft"]) == [
        "algo.advantage.estimator", "ckpt.output_dir", "data.max_samples"]


def test_steps_flags_size_the_prompts(prompts_file):
    embedded = resolve_train_config(["--advantage_estimator", "raft"])  # demo profile: 8 prompts per step
    assert steps_flags(embedded, 5) == ["--ext.num_prompts", "40"]
    user = resolve_train_config(["--pretrain", "m", "--prompt_data", prompts_file, "--rollout_batch_size", "3",
                                 "--n_samples_per_prompt", "2", "--train_batch_size", "6", "--actor_num_gpus_per_node",
                                 "1", "--ref_num_gpus_per_node", "1", "--vllm_num_engines", "1"])
    assert steps_flags(user, 2) == ["--data.max_samples", "6"]
    with pytest.raises(ValueError):
        steps_flags(user, 0)


def test_ray_job_command():
    command = train_command(["--pretrain", "m"], ray_address="http://head:8265")
    assert command[1:] == ["job", "submit", "--address", "http://head:8265", "--working-dir", ".", "--", "python",
                           "-m", "openrlhf_ext.cli.train_ppo_ray", "--pretrain", "m"]
    assert train_command(["--x"])[1:] == ["-m", "openrlhf_ext.cli.train_ppo_ray", "--x"]


def test_dry_run_lists_runs_and_skips_finished_ones(tmp_path, capsys):
    out = tmp_path / "sw"
    assert sweep(["--estimators", "raft,group_norm", "--seeds", "1", "--steps", "2", "--output_dir", str(out),
                  "--dry_run"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "-seed1 [" in line]
    assert lines[0].startswith("raft-seed1 [to run]: ") and lines[1].startswith("group_norm-seed1 [to run]: ")
    assert "--ext.num_prompts 16 --algo.advantage.estimator raft --train.seed 1" in lines[0]
    with pytest.raises(SystemExit):
        sweep(["--steps", "2", "--seed", "3", "--dry_run"])  # the sweep owns the seed
    assert "use --seeds" in capsys.readouterr().err


# ---- a real sweep: 3 estimators x 1 seed x 2 steps on CPU -----------------------------------------


@pytest.mark.slow
def test_cpu_sweep_three_estimators_then_resume(tmp_path, tiny_model_dir, capsys):
    train = small_run_flags(tiny_model_dir, tmp_path / "unused")
    for owned in ("--save_path", "--ext.num_prompts"):  # the sweep sets these per run
        i = train.index(owned)
        del train[i : i + 2]
    out = tmp_path / "sweep"
    argv = ["--estimators", "raft,reinforce_rej,group_norm", "--seeds", "7", "--steps", "2", "--output_dir", str(out),
            "--eval_data", str(MATH_DATA / "math_style.jsonl"), "--eval_limit", "2", "--eval_n_samples", "2",
            "--eval_max_new_tokens", "8", *train, "--remote_rm_url", HALF_FILTERED_REWARD]
    assert sweep(argv) == 0
    for estimator in ("raft", "reinforce_rej", "group_norm"):
        run_dir = out / f"{estimator}-seed7"
        assert (run_dir / DONE_FILE).exists() and (run_dir / "model.safetensors").exists()
        rows = read_metrics(run_dir)
        assert [r["step"] for r in rows] == [1, 2]
        eval_report = json.loads((run_dir / "eval" / "report.json").read_text())
        assert eval_report["benchmarks"]["math_style"]["n_problems"] == 2
        assert eval_report["model"] == str(run_dir)
    config = json.loads((out / "raft-seed7" / "sweep_run.json").read_text())["flags"]
    assert config[config.index("--train.seed") + 1] == "7"
    report = (out / "report.md").read_text()
    assert (out / "sweep_reward.png").read_bytes()[:8] == PNG_MAGIC
    for estimator in ("raft", "reinforce_rej", "group_norm"):
        assert f"| {estimator} | 1 | 2 |" in report
    assert "math_style avg@2" in report
    capsys.readouterr()

    # Same command again: nothing is retrained or re-evaluated, the report is rewritten.
    logs = {p: p.stat().st_mtime for p in out.glob("*/console.log")}
    assert sweep(argv) == 0
    printed = capsys.readouterr().err  # the sweep's own messages are log messages, on stderr
    assert printed.count("finished, skipped") == 3 and printed.count("eval report exists, kept") == 3
    assert {p: p.stat().st_mtime for p in out.glob("*/console.log")} == logs
