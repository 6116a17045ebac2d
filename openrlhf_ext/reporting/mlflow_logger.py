"""mlflow tracking (``--ext.mlflow_uri``), beside OpenRLHF's own wandb and TensorBoard loggers.

The run's parameters are the resolved configuration (every flag, as ``--print_config`` shows it);
its metrics are every numeric entry of each step's status under ``train/`` (the keys wandb and
TensorBoard use) and of each evaluation under ``eval/``. Written with ``MlflowClient`` against an
explicit tracking URI and run id, not mlflow's process-global "active run": the trainer is a Ray
actor that shares its process with nothing of ours, but a library that calls ``mlflow.*`` itself
would otherwise log into our run.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

DEFAULT_EXPERIMENT = "openrlhf-ext"
DEFAULT_STORE = "mlflow.db"
# mlflow's limits: 100 params / 1000 metrics per log_batch call, 6000 characters per param value.
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000
MAX_PARAM_CHARS = 6000
# Characters mlflow accepts in a key; any other becomes "_" rather than failing a step mid-run.
_BAD_KEY_CHARS = re.compile(r"[^\w\-. /]")


def tracking_uri(flag_value: str, output_dir: str) -> str:
    """The store of ``--ext.mlflow_uri``: as given, or a SQLite file in the run's output folder when
    the flag has no value."""
    if flag_value:
        return flag_value
    return f"sqlite:///{Path(output_dir).resolve() / DEFAULT_STORE}"


def flatten(config: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``{"actor": {"adam": {"lr": 1e-6}}}`` -> ``("actor.adam.lr", 1e-6)``."""
    for key, value in config.items():
        if isinstance(value, Mapping):
            yield from flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def scalar(value: Any) -> float | None:
    """A status value as a float, or None for what is not a number (text samples, lists)."""
    if isinstance(value, torch.Tensor):
        return value.float().mean().item() if value.numel() else math.nan
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class MlflowLogger:
    """One mlflow run: params at the start, metrics per step, status at the end."""

    def __init__(self, uri: str, run_name: str, config: Mapping[str, Any]) -> None:
        try:
            from mlflow import MlflowClient
        except ImportError as err:
            raise ImportError("--ext.mlflow_uri needs mlflow: pip install 'openrlhf-ext[mlflow]'") from err
        from mlflow.entities import Param

        self.client = MlflowClient(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_EXPERIMENT)
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id
        params = [Param(self._key(key), str(value)[:MAX_PARAM_CHARS]) for key, value in flatten(config)]
        for batch in _chunks(params, PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=batch)

    @staticmethod
    def _key(key: str) -> str:
        return _BAD_KEY_CHARS.sub("_", key)

    def _log(self, prefix: str, step: int, logs: Mapping[str, Any]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(self._key(f"{prefix}/{key}"), value, now, step)
            for key, value in ((k, scalar(v)) for k, v in logs.items())
            if value is not None
        ]
        for batch in _chunks(metrics, METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=batch)

    def log_train(self, step: int, logs: Mapping[str, Any]) -> None:
        self._log("train", step, logs)

    def log_eval(self, step: int, logs: Mapping[str, Any]) -> None:
        self._log("eval", step, logs)

    def close(self, failed: bool = False) -> None:
        self.client.set_terminated(self.run_id, status="FAILED" if failed else "FINISHED")


def mlflow_logger_for(args: SimpleNamespace) -> MlflowLogger | None:
    """The run's logger when ``--ext.mlflow_uri`` is given: named like the wandb / TensorBoard run,
    with the whole configuration as its params."""
    from openrlhf_ext.reporting.records import config_to_dict

    if args.ext.mlflow_uri is None:
        return None
    uri = tracking_uri(args.ext.mlflow_uri, args.ckpt.output_dir)
    return MlflowLogger(uri, args.logger.wandb.run_name, config_to_dict(args))
