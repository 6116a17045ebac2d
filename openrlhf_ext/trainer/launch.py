"""Start a training run: resolve the embedded defaults, start Ray, run OpenRLHF's driver with our classes."""

from __future__ import annotations

import os
from types import SimpleNamespace

# Set in every Ray worker by OpenRLHF's own ray.init too; kept with the user's values if set.
STOCK_WORKER_ENV = {
    "TOKENIZERS_PARALLELISM": "true",
    "NCCL_DEBUG": "WARN",
    "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": "1",
}
WORKER_SETUP_HOOK = "openrlhf_ext.trainer.worker_setup.setup_worker"


def ray_runtime_env(extra_env: dict[str, str]) -> dict:
    """The runtime env of our Ray workers: stock env vars, ours, and the worker setup hook.

    Variables already in this process's environment are left out: under ``ray job submit`` they
    come from the job's own runtime env, which Ray refuses to merge with a second value.
    """
    env = {key: default for key, default in STOCK_WORKER_ENV.items() if key not in os.environ}
    env.update({key: value for key, value in extra_env.items() if os.environ.get(key) != value})
    return {"env_vars": env, "worker_process_setup_hook": WORKER_SETUP_HOOK}


def launch(args: SimpleNamespace) -> None:
    import ray
    from openrlhf.cli.train_ppo_ray import train as stock_train

    from openrlhf_ext.trainer.injection import injected

    if not ray.is_initialized():
        ray.init(runtime_env=ray_runtime_env({}))
    with injected():
        stock_train(args)
