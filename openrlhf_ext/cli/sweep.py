"""``python -m openrlhf_ext.cli.sweep``: the same training run once per estimator and seed, then one report.

Example (the Minimalist paper's comparison, arXiv:2504.11343, on the embedded CPU defaults)::

    python -m openrlhf_ext.cli.sweep --estimators raft,reinforce_rej,group_norm --steps 20 --seeds 1,2

Every flag the sweep does not know is passed to each training run (``train_ppo_ray``). Runs go to
``<output_dir>/<estimator>-seed<S>``, one after the other (or as Ray jobs with ``--ray_address``);
finished runs are skipped, so the command resumes after an interruption. ``<output_dir>/report.md``
holds the curves (``sweep_*.png``) and a final table, with avg@k of each final model on
``--eval_data`` when given.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from openrlhf_ext.cli.sweep_plan import (
    CONSOLE_FILE,
    DEFAULT_ESTIMATORS,
    EVAL_DIR,
    RESERVED_DESTS,
    Run,
    SweepStateError,
    eval_scores,
    fingerprint,
    finish_run,
    is_finished,
    mark_started,
    parse_list,
    plan_runs,
    reserved_settings,
    run_flags,
    steps_flags,
    train_command,
    write_sweep_report,
)
from openrlhf_ext.cli.train_config import resolve_train_config
from openrlhf_ext.eval.generation import BACKENDS

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m openrlhf_ext.cli.sweep", description=__doc__.split("\n\n")[0], allow_abbrev=False,
        epilog="Any other flag is a training flag, passed to every run (python -m openrlhf_ext.cli.train_ppo_ray).",
    )
    p.add_argument("--estimators", default=",".join(DEFAULT_ESTIMATORS), help="comma-separated estimator presets")
    p.add_argument("--seeds", default="42", help="comma-separated training seeds")
    p.add_argument("--steps", type=int, required=True, help="training steps (rollout batches) per run")
    p.add_argument("--output_dir", default="runs/sweep")
    p.add_argument("--window", type=int, default=20, help="moving-average window of the curves (clipped to the run)")
    p.add_argument("--tail", type=int, default=10, help="the reward column averages the last TAIL steps")
    p.add_argument("--eval_data", default=None, help="comma-separated benchmarks to score each final model on")
    p.add_argument("--eval_n_samples", type=int, default=4, help="k of avg@k")
    p.add_argument("--eval_max_new_tokens", type=int, default=None, help="default: the runs' --rollout.max_new_tokens")
    p.add_argument("--eval_limit", type=int, default=None, help="first N problems of each benchmark")
    p.add_argument("--eval_greedy", action="store_true", help="also score one greedy response per problem")
    p.add_argument("--eval_template", default=None, help="default: the runs' --ext.template")
    p.add_argument("--eval_backend", choices=BACKENDS, default="auto")
    p.add_argument("--eval_batch_size", type=int, default=32)
    p.add_argument("--ray_address", default=None,
                   help="submit each run with `ray job submit --address ADDR` (output_dir on storage the cluster sees)")
    p.add_argument("--ray_working_dir", default=".", help="--working-dir of the Ray jobs")
    p.add_argument("--retries", type=int, default=0,
                   help="restart a failed run up to N times (e.g. after a worker killed for memory)")
    p.add_argument("--dry_run", action="store_true", help="print the runs and their commands, run nothing")
    return p


def _eval_template(args: argparse.Namespace, config: SimpleNamespace) -> str:
    if args.eval_template:
        return args.eval_template
    if config.ext.template:
        return config.ext.template
    if config.data.apply_chat_template:
        return "chat"
    raise ValueError("--eval_template: the runs use no --ext.template; say which template to evaluate with")


def train_one(run: Run, flags: list[str], steps: int, args: argparse.Namespace) -> str | None:
    """Run (or resume) one training run; None on success, else why it failed."""
    mark_started(run.run_dir, flags)
    command = train_command(flags, args.ray_address, args.ray_working_dir)
    log = run.run_dir / CONSOLE_FILE
    started = time.time()
    with log.open("a", encoding="utf-8") as f:
        f.write(f"\n$ {shlex.join(command)}\n")
        f.flush()
        code = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, check=False).returncode
    if code != 0:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
        print("\n".join(tail), flush=True)
        return f"exit code {code} (log: {log})"
    return finish_run(run.run_dir, flags, steps, time.time() - started)


def evaluate_run(run: Run, args: argparse.Namespace, settings: Any, reward: Any,
                 benchmarks: dict[str, list[dict[str, str]]]) -> dict[str, float]:
    """avg@k of the run's final model, from its eval report when one with these settings exists."""
    from openrlhf_ext.eval.evaluate import REPORT_JSON, evaluate
    from openrlhf_ext.eval.generation import make_generator

    out = run.run_dir / EVAL_DIR
    if (out / REPORT_JSON).exists():
        report = json.loads((out / REPORT_JSON).read_text())
        if report["settings"] == dataclasses.asdict(settings) and list(report["benchmarks"]) == list(benchmarks):
            logger.info("%s: eval report exists, kept", run.label)
            return eval_scores(report)
    generator = make_generator(str(run.run_dir), backend=args.eval_backend, batch_size=args.eval_batch_size,
                               seed=settings.seed)
    return eval_scores(evaluate(generator, benchmarks, settings, out, reward, model=str(run.run_dir)))


def sweep(argv: Sequence[str]) -> int:
    """Run the sweep; returns the exit status (1 when a run failed)."""
    parser = build_parser()
    args, train_flags = parser.parse_known_args(list(argv))
    try:
        reserved = reserved_settings(train_flags)
        if reserved:
            raise ValueError(f"training flag(s) for {', '.join(reserved)}: the sweep sets these per run "
                             f"(use {', '.join(sorted({RESERVED_DESTS[d] for d in reserved}))})")
        if args.window < 1 or args.tail < 1 or args.retries < 0:
            raise ValueError("--window and --tail must be >= 1, --retries >= 0")
        seeds = [int(s) for s in parse_list(args.seeds, "--seeds")]
        runs = plan_runs(parse_list(args.estimators, "--estimators"), seeds, args.output_dir)
    except ValueError as err:
        parser.error(str(err))

    # Validate every estimator's configuration (no Ray, seconds) before the first run starts.
    configs = {e: resolve_train_config([*train_flags, "--algo.advantage.estimator", e])
               for e in dict.fromkeys(r.estimator for r in runs)}
    plan = []
    for run in runs:
        step_flags = steps_flags(configs[run.estimator], args.steps)
        plan.append((run, run_flags(run, train_flags, step_flags)))
    try:
        finished = {run: is_finished(run.run_dir, args.steps, fingerprint(flags)) for run, flags in plan}
    except SweepStateError as err:
        parser.error(str(err))
    out_dir = Path(args.output_dir).resolve()
    command = "python -m openrlhf_ext.cli.sweep " + shlex.join(argv)

    eval_settings = reward = benchmarks = None
    if args.eval_data:
        from openrlhf_ext.eval.evaluate import EvalSettings, load_benchmarks
        from openrlhf_ext.rewards import RewardConfig

        config = next(iter(configs.values()))
        try:
            template = _eval_template(args, config)
            eval_settings = EvalSettings(
                n_samples=args.eval_n_samples, max_new_tokens=args.eval_max_new_tokens or config.rollout.max_new_tokens,
                greedy=args.eval_greedy, template=template, limit=args.eval_limit)
            reward = RewardConfig(template=template, timeout_s=config.ext.reward_timeout)
            benchmarks = load_benchmarks(parse_list(args.eval_data, "--eval_data"), limit=args.eval_limit)
        except ValueError as err:
            parser.error(str(err))

    if args.dry_run:
        for run, flags in plan:
            state = "finished" if finished[run] else "to run"
            print(f"{run.label} [{state}]: {shlex.join(train_command(flags, args.ray_address, args.ray_working_dir))}")
        return 0

    failures: dict[Run, str] = {}
    for i, (run, flags) in enumerate(plan, start=1):
        if finished[run]:
            logger.info("(%d/%d) %s: finished, skipped", i, len(plan), run.label)
            continue
        logger.info("(%d/%d) %s: training, log %s", i, len(plan), run.label, run.run_dir / CONSOLE_FILE)
        started = time.time()
        why = train_one(run, flags, args.steps, args)
        for attempt in range(1, args.retries + 1):
            if not why:
                break
            logger.warning("%s: failed (%s); retry %d/%d", run.label, why, attempt, args.retries)
            why = train_one(run, flags, args.steps, args)
        if why:
            failures[run] = why
            logger.error("%s: training failed: %s", run.label, why)
        else:
            logger.info("%s: done in %.0f s", run.label, time.time() - started)

    from openrlhf_ext.reporting.curves import METRICS_FILE, load_metrics

    done = [run for run in runs if run not in failures]
    records = {run: load_metrics(run.run_dir / METRICS_FILE) for run in done}
    evals = {}
    if eval_settings is not None:
        for run in done:
            try:
                evals[run] = evaluate_run(run, args, eval_settings, reward, benchmarks)
            except Exception as err:  # noqa: BLE001  (one run's eval failing must not lose the others' report)
                failures[run] = f"evaluation failed: {err!r}"
                logger.error("%s: evaluation failed: %r", run.label, err)
    report = write_sweep_report(out_dir, runs, records, args.window, args.tail, evals or None,
                          eval_settings.n_samples if eval_settings else None, failures, command)
    logger.info("report: %s", report)
    print(report.read_text(encoding="utf-8"))
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> None:
    raise SystemExit(sweep(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    main()
