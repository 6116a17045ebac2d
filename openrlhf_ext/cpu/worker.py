"""Process-local CPU adaptations, installed in every Ray worker by the setup hook.

The patches are the ``cpu worker`` rows of :data:`openrlhf_ext.reaches.REACHES`; this module holds
their replacements and the environment of a CPU worker.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from openrlhf_ext.reaches import Where, apply
from openrlhf_ext.reaches.patching import swapped
from openrlhf_ext.reaches.ports import vllm_port_env

THREADS_ENV_VAR = "OPENRLHF_EXT_CPU_THREADS"
# Every worker may use every core, and idle OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE) instead
# of spinning. The actors mostly take turns (generation, then scoring, then training): measured on
# 2 cores, a SmolLM2-135M float32 forward+backward (8 x 80 tokens) took 5.1 s with 1 thread and
# 2.9 s with 2; two such processes at once took 5.2 s each with 1 thread, 8-9 s with 2 passive
# threads and 40 s with 2 spinning (OpenMP's default), which is why the default used to be 1.


def default_threads() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


CPU = torch.device("cpu")


def torch_extensions_dir() -> str:
    """Stable cache for DeepSpeed's JIT-built CPU ops (the first build takes ~90 s, two compilers
    at ~1.8 GB each), one per Python environment and torch version: torch rebuilds an op whose
    recorded build flags differ, so two virtualenvs sharing one directory would keep rebuilding."""
    from openrlhf_ext.models.embedded import default_cache_dir

    env_id = hashlib.sha1(sys.prefix.encode()).hexdigest()[:10]
    return str(Path(default_cache_dir()) / "torch_extensions" / f"{env_id}-torch{torch.__version__}")


# GiB of KV cache per vLLM CPU engine (vLLM's own default, 0, means "4 GiB" and warns).
DEFAULT_KVCACHE_GIB = "1"


def worker_threads() -> int:
    threads = int(os.environ.get(THREADS_ENV_VAR) or default_threads())
    if threads < 1:
        raise ValueError(f"{THREADS_ENV_VAR} must be >= 1, got {threads}")
    return threads


def vllm_cpu_env() -> dict[str, str]:
    """vLLM CPU settings (the user's values win): KV-cache GiB and no thread pinning. vLLM's "auto"
    binds every engine's threads to the last core: two engines, or an engine and the policy, would
    share one core while the other idles."""
    return {
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", DEFAULT_KVCACHE_GIB),
        "VLLM_CPU_OMP_THREADS_BIND": os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "nobind"),
    }


def cpu_worker_env() -> dict[str, str]:
    """Environment every CPU worker needs before DeepSpeed or vLLM is imported. The vLLM engine
    core is a process the engine actor spawns: it inherits these, and no setup hook runs there."""
    return {
        "DS_ACCELERATOR": "cpu",
        "TORCH_EXTENSIONS_DIR": torch_extensions_dir(),
        **vllm_cpu_env(),
        "OMP_NUM_THREADS": str(worker_threads()),
        "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE"),
    }


# Set in every Ray worker by OpenRLHF's own ray.init too; kept with the user's values if set.
STOCK_WORKER_ENV = {
    "TOKENIZERS_PARALLELISM": "true",
    "NCCL_DEBUG": "WARN",
    "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": "1",
}
# First thing every Ray worker runs: installs the GPU-module stand-ins, the rendezvous ports and,
# on the CPU platform, the CPU patches.
WORKER_SETUP_HOOK = "openrlhf_ext.cpu.apply_worker_patches"
# The platform the driver chose for the run ("cuda" or "cpu"), carried to every worker in the
# runtime env: a GPU cluster's worker without a GPU (the controller on a GPU-less head node) still
# runs the CUDA platform's code. Set by hand, it also chooses the driver's platform (openrlhf_ext.platforms).
PLATFORM_ENV = "OPENRLHF_EXT_PLATFORM"


def worker_platform() -> str:
    """The run's platform in this worker: the driver's choice, else (a Ray started without it) this
    process's own devices."""
    return os.environ.get(PLATFORM_ENV) or ("cuda" if torch.cuda.is_available() else "cpu")


def ray_runtime_env(extra_env: dict[str, str]) -> dict:
    """The runtime env of our Ray workers: stock env vars, ours, and the worker setup hook.

    Variables already in this process's environment are left out: under ``ray job submit`` they
    come from the job's own runtime env, which Ray refuses to merge with a second value.
    """
    env = {key: default for key, default in STOCK_WORKER_ENV.items() if key not in os.environ}
    env.update({key: value for key, value in extra_env.items() if os.environ.get(key) != value})
    return {"env_vars": env, "worker_process_setup_hook": WORKER_SETUP_HOOK}


def _returning(value: Any) -> Callable[[Callable], Callable]:
    """Factory of a stand-in that ignores its arguments and returns ``value``. One new function per
    patched name: torch.compile's trace rules reject one object registered under two torch names."""

    def factory(original: Callable) -> Callable:
        @functools.wraps(original)
        def stand_in(*_args: Any, **_kwargs: Any) -> Any:
            return value

        return stand_in

    return factory


returning_cpu = _returning(CPU)
returning_none = _returning(None)


def mesh_on_cpu(original: Callable) -> Callable:
    @functools.wraps(original)
    def init_device_mesh(device_type: str, *args: Any, **kwargs: Any) -> Any:
        return original("cpu" if device_type == "cuda" else device_type, *args, **kwargs)

    return init_device_mesh


def replay_buffer_on_cpu(original: Callable) -> Callable:
    """The stock constructor formats ``f"cuda:{torch.cuda.current_device()}"``: give it index 0
    to format, then point the buffer's target device at the CPU."""

    @functools.wraps(original)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        with swapped(torch.cuda, "current_device", lambda: 0):
            original(self, *args, **kwargs)
        self.target_device = CPU

    return __init__


def apply_worker_patches() -> list[str]:
    """The Ray worker setup hook: rendezvous ports everywhere, and the CPU platform's adaptations.

    Applies the ``worker`` reaches of :data:`openrlhf_ext.reaches.REACHES` and sets ``VLLM_PORT``
    (:mod:`openrlhf_ext.reaches.ports`); on the CPU platform (:func:`worker_platform`) also sets the
    DeepSpeed environment, pins torch to :func:`default_threads` intra-op threads (override with
    ``$OPENRLHF_EXT_CPU_THREADS``) and applies the ``cpu worker`` reaches. Reaches on not-yet-imported modules are applied at
    their import. Returns the targets patched immediately.
    """
    for key, value in vllm_port_env().items():
        os.environ.setdefault(key, value)
    patched = apply(Where.WORKER, defer=True)
    if worker_platform() != "cpu":
        return patched
    for key, value in cpu_worker_env().items():
        os.environ.setdefault(key, value)
    torch.set_num_threads(worker_threads())
    return patched + apply(Where.CPU_WORKER, defer=True)
