"""Running OpenRLHF 0.11.2's Ray pipeline on a machine without CUDA: the platform layer.

Usage (driver)::

    import openrlhf_ext
    from openrlhf_ext.trainer.cpu import cpu_runtime_env, install_driver_patches

    install_driver_patches()                       # no-op when CUDA is available
    ray.init(runtime_env=cpu_runtime_env())        # or ensure_ray_for_cpu(); BEFORE train(), which
                                                   # would otherwise start Ray without the hook
    openrlhf.cli.train_ppo_ray.train(args)         # the stock driver, unchanged

Every Ray worker runs :func:`apply_worker_patches` through Ray's ``worker_process_setup_hook``
(``cpu_runtime_env()`` sets it; with ``ray job submit`` the job's runtime env may carry it too).

Everything we change in OpenRLHF, torch or Ray, in one table. An OpenRLHF upgrade that moves any
of these names fails loudly at patch time (``AttributeError: ... changed a CPU patch point``).

Worker side (:data:`~openrlhf_ext.trainer.cpu.worker.WORKER_PATCHES`, every Ray worker)

=====================================================================  ==================================
target                                                                 why / replacement
=====================================================================  ==================================
``torch.cuda.current_device``                                          OpenRLHF moves tensors to it -> ``cpu``
``torch.cuda.set_device``, ``torch.cuda.synchronize``                  called unconditionally -> no-op
``torch.cuda.current_stream``                                          passed to the sync broadcast -> ``None``
``openrlhf.utils.deepspeed.deepspeed.init_device_mesh``                ``"cuda"`` mesh -> ``"cpu"`` mesh
``openrlhf...replay_buffer.NaiveReplayBuffer.__init__``                ``target_device`` ``cuda:N`` -> ``cpu``
``openrlhf.trainer.ray.ppo_actor.stateless_init_process_group``        vLLM PyNccl group -> gloo group
``openrlhf.utils.utils.convert_to_torch_dtype``                        accepts ``fp32`` (``--ds.param_dtype``)
=====================================================================  ==================================

plus environment: ``DS_ACCELERATOR=cpu`` (DeepSpeed's CPU accelerator, gloo backend),
``TORCH_EXTENSIONS_DIR`` in our cache (DeepSpeed's JIT ops are built once), one torch intra-op thread per worker
(``$OPENRLHF_EXT_CPU_THREADS``, also the vLLM engine's ``OMP_NUM_THREADS``), vLLM's CPU KV-cache size
``VLLM_CPU_KVCACHE_SPACE`` (GiB, default 1) and ``VLLM_CPU_OMP_THREADS_BIND=nobind`` (vLLM would pin
every engine to the same core).

vLLM EngineCore process (spawned by the engine actor: no Ray hook reaches it)

=====================================================================  ==================================
``worker_extension_cls``                                               OpenRLHF's ``WorkerWrap`` ->
                                                                       :class:`~.vllm_worker.CpuWorkerWrap`
                                                                       (gloo group, CPU tensors, dtype cast)
=====================================================================  ==================================

Driver side (:data:`~openrlhf_ext.trainer.cpu.driver.DRIVER_PATCHES`, the process calling ``train``)

======================================================================  =================================
target (each in ``openrlhf.cli.train_ppo_ray`` and its home module)     why / replacement
======================================================================  =================================
``RayActorGroup`` (``openrlhf.trainer.ray.launcher``)                   ``num_gpus=1`` actors -> ``CpuRayActorGroup`` (0 GPU, 0 CPU,
                                                                        the role's node resource if the cluster has it)
``placement_group`` (``launcher``)                                      ``{"GPU": 1}`` bundles -> CPU shares
``placement_group`` (``openrlhf.trainer.ray.vllm_engine``)             the engines' ``{"GPU": 1}`` bundles -> CPU shares
                                                                        (+ ``openrlhf_rollout`` if the cluster has it)
``RolloutRayActor`` (``openrlhf.trainer.ray.vllm_engine``)             stock actor with 0 GPU / 0 CPU and
                                                                        :func:`~.rollout.cpu_engine_kwargs` (dtype,
                                                                        worker extension, eager)
``get_strategy`` (``openrlhf.utils``)                                   first call of ``train``: ``adapt_args_for_cpu``,
                                                                        engine dtype = policy dtype, Ray hook check
======================================================================  =================================

``adapt_args_for_cpu`` rewrites flash attention -> sdpa, ``--vllm.num_engines`` 0/None -> 1,
``--vllm.sync_backend`` -> gloo, ``--vllm.sync_with_ray`` and ``--vllm.enable_sleep`` -> off, and
refuses packing, 4-bit, Liger, EMA and ring attention with a clear error. The CLI picks
``--ds.param_dtype`` for the CPU when it is not given (:mod:`~.dtype`).

What stays real: Ray actors and scheduling, vLLM (vllm-cpu, OpenRLHF's own ``RolloutRayActor`` and
``create_vllm_engines``), DeepSpeed (ZeRO-3 included) on gloo, the reference model, the
trainer/controller, the stock experience maker, agent executors and reward-function loading, the
weight broadcast loop of ``broadcast_to_vllm``. Substituted: NCCL (by gloo). See docs/cpu.md.
"""

from typing import Any

from openrlhf_ext.trainer.cpu.worker import WORKER_PATCHES, apply_worker_patches

# The setup hook imports this package in every Ray worker: the driver side (which imports
# OpenRLHF's launcher, hence DeepSpeed, ~12 s) is loaded only when one of its names is used.
_DRIVER_NAMES = (
    "DRIVER_PATCHES",
    "SETUP_HOOK",
    "CpuRayActorGroup",
    "adapt_args_for_cpu",
    "cpu_runtime_env",
    "ensure_ray_for_cpu",
    "install_driver_patches",
)

__all__ = ["WORKER_PATCHES", "apply_worker_patches", *_DRIVER_NAMES]


def __getattr__(name: str) -> Any:
    if name in _DRIVER_NAMES:
        from openrlhf_ext.trainer.cpu import driver

        return getattr(driver, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
