"""Driver-side CPU adaptations: resources, rollout engines, arguments, Ray's runtime environment.

The patches are the ``cpu driver`` rows of :data:`openrlhf_ext.reaches.REACHES`; this module holds
their replacements.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import ray
import torch
from openrlhf.trainer.ray.launcher import RayActorGroup
from ray.util.placement_group import placement_group

from openrlhf_ext.cpu.dtype import cpu_param_dtype
from openrlhf_ext.cpu.rollout import CPU_ROLLOUT_ACTOR
from openrlhf_ext.cpu.worker import WORKER_SETUP_HOOK as SETUP_HOOK
from openrlhf_ext.cpu.worker import cpu_worker_env, ray_runtime_env
from openrlhf_ext.reaches import Where, apply
from openrlhf_ext.reaches.stand_ins import VLLM_MISSING, vllm_is_real

# Logical CPU share of one placement-group bundle. Actors themselves request 0 CPUs: on a 2-core
# machine policy + reference + generator + trainer could never each hold a whole core, and they
# take turns anyway (generation, then scoring, then training).
CPU_PER_BUNDLE = 0.01

# Stock flags that name CUDA-only features; adapt_args_for_cpu refuses them with this reason.
UNSUPPORTED_ON_CPU = {
    ("ds", "load_in_4bit"): "bitsandbytes 4-bit loading needs CUDA",
    ("ds", "use_liger_kernel"): "Liger kernels are Triton (GPU) kernels",
    ("train", "enable_ema"): "OpenRLHF's EMA update moves weights to 'cuda'",
}


def _log(msg: str) -> None:
    print(f"[openrlhf_ext.cpu] {msg}", file=sys.stderr, flush=True)


# On a GPU cluster the GPUs decide which node hosts which role. Without GPUs, a Ray node started
# with one of these custom resources (``ray start --resources '{"openrlhf_rollout": 1}'``) hosts
# that role's actors; a cluster that defines none of them lets Ray place every role anywhere.
ROLE_RESOURCES = {
    "PolicyModelActor": "openrlhf_policy",
    "ReferenceModelActor": "openrlhf_reference",
    "CriticModelActor": "openrlhf_critic",
    "RewardModelActor": "openrlhf_reward",
}
ROLLOUT_RESOURCE = "openrlhf_rollout"
ROLE_RESOURCE_SHARE = 0.001  # any number of a role's actors fit on a node that defines the resource


def cpu_bundles(bundles: list[dict[str, float]], extra: dict[str, float] | None = None) -> list[dict[str, float]]:
    """OpenRLHF's ``{"GPU": 1, "CPU": 1}`` bundles as CPU-only bundles (custom resources kept, plus
    ``extra``)."""
    result = []
    for bundle in bundles:
        cpu_bundle = {k: v for k, v in bundle.items() if k not in ("GPU", "CPU")}
        cpu_bundle["CPU"] = CPU_PER_BUNDLE
        result.append({**cpu_bundle, **(extra or {})})
    return result


def role_resource(name: str) -> dict[str, float]:
    """``{name: share}`` when the Ray cluster defines the custom resource ``name``, else ``{}``."""
    return {name: ROLE_RESOURCE_SHARE} if name in ray.cluster_resources() else {}


def cpu_placement_group(bundles: list[dict[str, float]], strategy: str = "PACK", *args: Any, **kwargs: Any):
    """``ray.util.placement_group`` that asks for CPU shares where OpenRLHF asks for GPUs."""
    return placement_group(cpu_bundles(bundles), strategy, *args, **kwargs)


def cpu_rollout_placement_group(bundles: list[dict[str, float]], strategy: str = "PACK", *args: Any, **kwargs: Any):
    """The vLLM engines' placement group: CPU shares, on the nodes that define ``openrlhf_rollout``."""
    return placement_group(cpu_bundles(bundles, role_resource(ROLLOUT_RESOURCE)), strategy, *args, **kwargs)


class CpuRayActorGroup(RayActorGroup):
    """OpenRLHF's actor group with no GPU (and no whole-CPU) reservation per actor, on the nodes that
    define its role's resource (:data:`ROLE_RESOURCES`) when the cluster has them."""

    def _initiate_actors(self, pg, num_gpus_per_actor):  # noqa: ANN001 (stock signature)
        if pg is None and self._resources is None:  # a shared (colocation) group already chose its node
            roles = [ROLE_RESOURCES[c.__name__] for c in self.ray_actor_type.__ray_actor_class__.__mro__
                     if c.__name__ in ROLE_RESOURCES]
            self._resources = (role_resource(roles[0]) if roles else {}) or None
            self._num_resources_per_node = ROLE_RESOURCE_SHARE
        # The stock code requests num_cpus = num_gpus = num_gpus_per_actor for every actor.
        super()._initiate_actors(pg, 0)


def adapt_args_for_cpu(args: Any) -> list[str]:
    """Rewrite stock arguments that can only mean CUDA into their CPU equivalents, in place.

    Returns one line per change (empty when nothing changed; calling it twice changes nothing the
    second time). Flags naming a CUDA-only feature are refused with a ``ValueError``.
    """
    for (section, name), reason in UNSUPPORTED_ON_CPU.items():
        if getattr(getattr(args, section), name, False):
            raise ValueError(f"--{section}.{name} is not available on CPU: {reason}")
    if getattr(args.ds, "ring_attn_size", 1) > 1:
        raise ValueError("--ds.ring_attn_size > 1 is not available on CPU: ring attention needs flash-attn")
    changes = []

    def change(section: str, name: str, value: Any, why: str) -> None:
        old = getattr(getattr(args, section), name)
        if old != value:
            setattr(getattr(args, section), name, value)
            changes.append(f"--{section}.{name} {old} -> {value} ({why})")

    if "flash" in str(args.ds.attn_implementation) or "/" in str(args.ds.attn_implementation):
        change("ds", "attn_implementation", "sdpa", "flash-attention kernels need CUDA")
    if not args.vllm.num_engines:
        change("vllm", "num_engines", 1, "OpenRLHF generates only through vLLM engines; one on CPU")
    change("vllm", "sync_backend", "gloo", "weights go to the vLLM engines over gloo, not NCCL / CUDA IPC")
    change("vllm", "sync_with_ray", False, "Ray's gloo collective would join DeepSpeed's default group")
    change("vllm", "enable_sleep", False, "vLLM's sleep mode frees CUDA memory; a CPU engine has none to free")
    return changes


def cpu_runtime_env(env_vars: dict[str, str] | None = None) -> dict[str, Any]:
    """``runtime_env`` for ``ray.init`` on a CPU machine: our setup hook in every worker plus the
    environment it needs (and OpenRLHF's own defaults), merged with ``env_vars``.

    Variables this process already has with the same value are left out: under ``ray job submit``
    they come from the job's runtime env, and Ray refuses to merge a key given twice.
    """
    return ray_runtime_env({**cpu_worker_env(), **(env_vars or {})})


def ensure_ray_for_cpu(**init_kwargs: Any) -> None:
    """Start Ray with :func:`cpu_runtime_env` unless it runs; if it runs, insist on our hook
    (without it the workers would hit ``torch.cuda`` and fail far from the cause).

    Under ``ray job submit --runtime-env-json '{"worker_process_setup_hook": ...}'`` Ray refuses
    a second ``worker_process_setup_hook`` from ``ray.init``; the job's runtime env then stands.
    """
    if not ray.is_initialized():
        try:
            ray.init(runtime_env=cpu_runtime_env(), **init_kwargs)
        except ValueError as err:
            if "runtime env" not in str(err) or "conflict" not in str(err):
                raise
            ray.init(**init_kwargs)
    hook = (ray.get_runtime_context().runtime_env or {}).get("worker_process_setup_hook")
    if hook != SETUP_HOOK:
        raise RuntimeError(
            f"Ray was initialised without the CPU worker setup hook (found {hook!r}); start it with "
            f"ray.init(runtime_env=openrlhf_ext.cpu.cpu_runtime_env()) or pass "
            f'--runtime-env-json \'{{"worker_process_setup_hook": "{SETUP_HOOK}"}}\' to ray job submit'
        )


def strategy_for_cpu(original: Callable) -> Callable:
    """``train(args)`` calls ``get_strategy(args)`` before creating any actor: the one place to
    adapt the arguments and make sure Ray carries the worker hook."""

    def get_strategy(args: Any) -> Any:
        for line in adapt_args_for_cpu(args):
            _log(line)
        if getattr(getattr(args, "provenance", None), "ds.param_dtype", None) == "cpu":  # our CLI's record
            _log(f"--ds.param_dtype {args.ds.param_dtype}: {cpu_param_dtype()[1]} (give --ds.param_dtype to override)")
        CPU_ROLLOUT_ACTOR.set_param_dtype(args.ds.param_dtype)
        ensure_ray_for_cpu()
        return original(args)

    return get_strategy


def install_driver_patches() -> list[str]:
    """Point the stock driver ``openrlhf.cli.train_ppo_ray.train(args)`` at CPU resources and CPU
    vLLM engines (the ``cpu driver`` reaches); a no-op (returns ``[]``) when CUDA is available. Returns the patched targets.

    Without vLLM, stops with one line saying what to install, before any actor starts."""
    if torch.cuda.is_available():
        return []
    if not vllm_is_real():
        raise SystemExit(f"error: {VLLM_MISSING}")
    return apply(Where.CPU_DRIVER)
