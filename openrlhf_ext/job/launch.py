"""Start a training run: resolve the inputs, start Ray, run OpenRLHF's driver with our classes."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace

from openrlhf_ext.cpu.worker import cpu_worker_env, ray_runtime_env


def launch(args: SimpleNamespace) -> None:
    import ray
    import torch
    from openrlhf.cli.train_ppo_ray import train as stock_train
    from ray.exceptions import RayError

    from openrlhf_ext.job.inputs import prepare_inputs
    from openrlhf_ext.job.restarts import run_with_restarts
    from openrlhf_ext.job.run_guard import guarded_run
    from openrlhf_ext.reaches import Where, scoped
    from openrlhf_ext.reporting.failures import RunFailure, describe_failure

    worker_env = prepare_inputs(args)
    ray_env = dict(worker_env)
    if not torch.cuda.is_available():
        from openrlhf_ext.cpu import install_driver_patches
        from openrlhf_ext.cpu.layout import GIB, Machine, check_fit, sized_layout_line
        from openrlhf_ext.job.checks import InputError

        layout_line = sized_layout_line(args, Machine.this())
        if layout_line:
            print(f"[openrlhf_ext.cpu] {layout_line}", file=sys.stderr, flush=True)
        ray_env.update(cpu_worker_env())
        fit = check_fit(args, engine_cache_bytes=int(float(ray_env.get("VLLM_CPU_KVCACHE_SPACE", 0)) * GIB))
        if fit and fit.fatal:
            raise InputError(fit.message)
        if fit:
            print(f"[openrlhf_ext.cpu] warning: {fit.message}", file=sys.stderr, flush=True)
        install_driver_patches()
    # Built before os.environ gets worker_env: ray_runtime_env leaves out what this process already
    # has, which must mean "set by the job's runtime env", not "set by us a line above".
    runtime_env = ray_runtime_env(ray_env)
    os.environ.update(worker_env)  # the driver-side reward calls (evaluation) read them too

    def attempt() -> None:
        # Every process of the run ends with it, and a dead actor fails it at once (see run_guard);
        # a restart (run_with_restarts) starts from a clean slate with a new guarded run.
        with guarded_run() as guard:
            if not ray.is_initialized():
                ray.init(runtime_env=runtime_env)
            try:
                with scoped(Where.DRIVER), guard.watching_actors():
                    stock_train(args)
            except RayError as err:
                raise RunFailure(describe_failure(err, args.ckpt.output_dir)) from err

    run_with_restarts(args, attempt)
    write_run_report(args.ckpt.output_dir)


def write_run_report(output_dir: str) -> None:
    """Curves PNG and summary table of the run in ``output_dir`` (from its metrics.jsonl)."""
    from openrlhf_ext.reporting.curves import METRICS_FILE, load_metrics, plot_runs, run_summary_table

    metrics = Path(output_dir) / METRICS_FILE
    if not metrics.exists():
        print(f"[openrlhf_ext] no {metrics}: nothing to report")
        return
    records = load_metrics(metrics)
    png = plot_runs({Path(output_dir).name: records}, Path(output_dir) / "curves.png")
    table = run_summary_table(records)
    (Path(output_dir) / "summary.md").write_text(table + "\n")
    print(f"\n{table}\n\ncurves: {png}\nmetrics: {metrics}", flush=True)
