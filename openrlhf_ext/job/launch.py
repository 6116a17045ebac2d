"""Start a training run: resolve the inputs, start Ray, run OpenRLHF's driver with our classes."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from types import SimpleNamespace

logger = logging.getLogger(__name__)


def launch(args: SimpleNamespace) -> None:
    """Run the validated configuration ``args`` on its platform (``args.platform``, chosen by the CLI)."""
    import ray
    from openrlhf.cli.train_ppo_ray import train as stock_train
    from ray.exceptions import RayError

    from openrlhf_ext.job.checks import InputError
    from openrlhf_ext.job.inputs import prepare_inputs
    from openrlhf_ext.job.restarts import run_with_restarts
    from openrlhf_ext.job.run_guard import guarded_run
    from openrlhf_ext.platforms import PlatformError
    from openrlhf_ext.reaches import Where, import_replacements, scoped
    from openrlhf_ext.reporting.failures import RunFailure, describe_failure

    platform = args.platform
    worker_env = prepare_inputs(args)
    try:
        platform.check_before_ray(args)
    except PlatformError as err:
        raise InputError(str(err)) from None
    # Built before os.environ gets worker_env: the runtime env leaves out what this process already
    # has, which must mean "set by the job's runtime env", not "set by us a line above".
    runtime_env = platform.runtime_env(worker_env)
    os.environ.update(worker_env)  # the driver-side reward calls (evaluation) read them too

    # Under `ray job submit` this process runs from Ray's unpacked copy of the working dir, which Ray
    # may remove and unpack again while ray.init sets up the job's runtime env: a module of ours first
    # imported after that can be missing for a moment (ModuleNotFoundError). Import them before.
    for where in (Where.DRIVER, *platform.driver_reaches):
        import_replacements(where)

    def attempt() -> None:
        # Every process of the run ends with it, and a dead actor fails it at once (see run_guard);
        # a restart (run_with_restarts) starts from a clean slate with a new guarded run.
        with guarded_run() as guard:
            if not ray.is_initialized():
                ray.init(address=platform.ray_address, runtime_env=runtime_env)
            try:
                # The platform's reaches inside ours: its engine row wraps our engine actor.
                with scoped(Where.DRIVER), platform.driver(args), guard.watching_actors():
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
        logger.warning(f"no {metrics}: nothing to report")
        return
    records = load_metrics(metrics)
    png = plot_runs({Path(output_dir).name: records}, Path(output_dir) / "curves.png")
    table = run_summary_table(records)
    (Path(output_dir) / "summary.md").write_text(table + "\n")
    print(f"\n{table}\n\ncurves: {png}\nmetrics: {metrics}", flush=True)
