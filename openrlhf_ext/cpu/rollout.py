"""OpenRLHF's own vLLM rollout actor on a CPU: what ``create_vllm_engines`` asks of it, adapted.

The stock ``create_vllm_engines`` stays in charge (engine count, seeds, placement, agent executor,
reward, logprobs mode). It creates each engine as
``RolloutRayActor.options(num_cpus=1, num_gpus=1, ...).remote(**engine_kwargs)``; on CPU the
driver points that module attribute at :data:`CPU_ROLLOUT_ACTOR`, which creates the very same
stock ``RolloutRayActor`` (or a subclass of it given to :class:`CpuRolloutActorClass`: our runs'
seeded engines, :mod:`openrlhf_ext.trainer.rollout_seeds`) with

* no GPU (and no whole-core) reservation: the engine shares the cores with the other actors and
  they take turns (generate, score, train);
* :func:`cpu_engine_kwargs` applied to the engine arguments: the compute dtype of the run instead
  of the hard-coded bfloat16, our :class:`~openrlhf_ext.cpu.vllm_worker.CpuWorkerWrap` as
  the worker extension (gloo weight sync into CPU tensors), eager mode (torch.compile's warm-up
  costs minutes on a CPU and CUDA graphs do not exist there).

KV-cache size and thread placement of the engine come from the environment
(:func:`~openrlhf_ext.cpu.worker.cpu_worker_env`).
"""

from __future__ import annotations

from typing import Any

from openrlhf.trainer.ray.vllm_engine import RolloutRayActor

from openrlhf_ext.cpu.dtype import cpu_param_dtype, vllm_dtype_name

CPU_WORKER_EXTENSION = "openrlhf_ext.cpu.vllm_worker.CpuWorkerWrap"
# vLLM's config check refuses None; on CPU the KV cache is sized by VLLM_CPU_KVCACHE_SPACE instead.
CPU_MEMORY_UTILIZATION = 0.9


def cpu_engine_kwargs(kwargs: dict[str, Any], dtype: str) -> dict[str, Any]:
    """The stock engine arguments with what a CPU engine needs instead (a new dict)."""
    if kwargs.get("tensor_parallel_size", 1) != 1:
        raise ValueError(
            f"--vllm.tensor_parallel_size {kwargs['tensor_parallel_size']}: a CPU engine has no tensor "
            f"parallelism; use --vllm.num_engines for more engines"
        )
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
    (the stock actor or a subclass of it)."""

    # One for all stand-ins: the driver sets it once per run, on whichever stand-in it holds.
    dtype = vllm_dtype_name(cpu_param_dtype()[0])

    def __init__(self, actor_class: Any = RolloutRayActor) -> None:
        self.actor_class = actor_class

    @classmethod
    def set_param_dtype(cls, param_dtype: str) -> None:
        """Engines generate in the policy's dtype, so the rollout and training log-probs agree."""
        cls.dtype = vllm_dtype_name(param_dtype)

    def options(self, **options: Any) -> _CpuEngineOptions:
        return _CpuEngineOptions(self.actor_class, {**options, "num_cpus": 0, "num_gpus": 0}, self.dtype)


CPU_ROLLOUT_ACTOR = CpuRolloutActorClass()
