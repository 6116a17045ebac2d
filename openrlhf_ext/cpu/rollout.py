"""OpenRLHF's own vLLM rollout actor on a CPU: what ``create_vllm_engines`` asks of it, adapted.

The stock ``create_vllm_engines`` stays in charge (engine count, seeds, placement, agent executor,
reward, logprobs mode). It creates each engine as
``RolloutRayActor.options(num_cpus=1, num_gpus=1, ...).remote(**engine_kwargs)``; on CPU the
``cpu driver`` reach wraps that module attribute (our seeded engine actor by then, see
:mod:`openrlhf_ext.trainer.rollout_seeds`) in a :class:`CpuRolloutActorClass`, which creates the
very same actor with

* no GPU (and no whole-core) reservation: the engine shares the cores with the other actors and
  they take turns (generate, score, train);
* :func:`cpu_engine_kwargs` applied to the engine arguments: the compute dtype of the run instead
  of the hard-coded bfloat16, our :class:`~openrlhf_ext.cpu.vllm_worker.CpuWorkerWrap` as
  the worker extension (gloo weight sync into CPU tensors), eager mode (torch.compile's warm-up
  costs minutes on a CPU and CUDA graphs do not exist there).

KV-cache size and thread placement of the engine come from the environment
(:func:`~openrlhf_ext.cpu.worker.cpu_worker_env`). Tensor-parallel engines are refused by the CLI
(:mod:`openrlhf_ext.cpu.flags`).
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

CPU_WORKER_EXTENSION = "openrlhf_ext.cpu.vllm_worker.CpuWorkerWrap"
# vLLM's config check refuses None; on CPU the KV cache is sized by VLLM_CPU_KVCACHE_SPACE instead.
CPU_MEMORY_UTILIZATION = 0.9


def cpu_engine_kwargs(kwargs: dict[str, Any], dtype: str) -> dict[str, Any]:
    """The stock engine arguments with what a CPU engine needs instead (a new dict)."""
    return {
        **kwargs,
        "dtype": dtype,
        "worker_extension_cls": CPU_WORKER_EXTENSION,
        "enforce_eager": True,
        "distributed_executor_backend": "uni",
        "gpu_memory_utilization": kwargs.get("gpu_memory_utilization") or CPU_MEMORY_UTILIZATION,
        "num_gpus": 0,
    }


class _CpuEngineOptions:
    def __init__(self, actor_class: Any, options: dict[str, Any], dtype: str) -> None:
        self._actor_class = actor_class
        self._options = options
        self._dtype = dtype

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self._actor_class.options(**self._options).remote(*args, **cpu_engine_kwargs(kwargs, self._dtype))


class CpuRolloutActorClass:
    """Stands where ``create_vllm_engines`` looks up ``RolloutRayActor``; creates ``actor_class``
    (the stock actor or a subclass of it) with CPU resources and engine arguments in ``dtype``."""

    def __init__(self, actor_class: Any, dtype: str) -> None:
        self.actor_class = actor_class
        self.dtype = dtype

    def options(self, **options: Any) -> _CpuEngineOptions:
        return _CpuEngineOptions(self.actor_class, {**options, "num_cpus": 0, "num_gpus": 0}, self.dtype)


# The vLLM dtype of the run's engines, set by openrlhf_ext.cpu.driver.cpu_driver while it applies
# the reaches (a reach's replacement is built from the table, which holds no run settings).
ENGINE_DTYPE: ContextVar[str] = ContextVar("openrlhf_ext_engine_dtype")


def cpu_engines(actor_class: Any) -> CpuRolloutActorClass:
    """The ``cpu driver`` reach on ``RolloutRayActor``: the engine actor in place, on CPU."""
    return CpuRolloutActorClass(actor_class, ENGINE_DTYPE.get())
