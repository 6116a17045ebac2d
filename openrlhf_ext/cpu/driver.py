"""Driver-side CPU adaptations: resources, rollout engines, and the Ray worker hook they rely on.

The patches are the ``cpu driver`` rows of :data:`openrlhf_ext.reaches.REACHES`; this module holds
their replacements and :func:`cpu_driver`, which applies them around one call of OpenRLHF's
``train(args)``. The flags are adapted earlier, by the CLI (:mod:`openrlhf_ext.cpu.flags`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import ray
from openrlhf.trainer.ray.launcher import RayActorGroup
from ray.util.placement_group import placement_group

from openrlhf_ext.cpu.dtype import vllm_dtype_name
from openrlhf_ext.cpu.rollout import ENGINE_DTYPE
from openrlhf_ext.cpu.worker import WORKER_SETUP_HOOK
from openrlhf_ext.reaches import Where, scoped

# Logical CPU share of one placement-group bundle. Actors themselves request 0 CPUs: on a 2-core
# machine policy + reference + generator + trainer could never each hold a whole core, and they
# take turns anyway (generation, then scoring, then training).
CPU_PER_BUNDLE = 0.01

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


def require_worker_hook() -> None:
    """Stop with a clear error when Ray runs without our worker setup hook: the workers would
    otherwise hit ``torch.cuda`` and fail far from the cause."""
    hook = (ray.get_runtime_context().runtime_env or {}).get("worker_process_setup_hook")
    if hook != WORKER_SETUP_HOOK:
        raise RuntimeError(
            f"Ray was initialised without the CPU worker setup hook (found {hook!r}); start it with "
            f"ray.init(runtime_env=platform.runtime_env()) (openrlhf_ext.platforms) or pass "
            f'--runtime-env-json \'{{"worker_process_setup_hook": "{WORKER_SETUP_HOOK}"}}\' to ray job submit'
        )


@contextmanager
def cpu_driver(param_dtype: str) -> Iterator[None]:
    """Around OpenRLHF's ``train(args)`` in a Ray-initialised driver: CPU resources and CPU vLLM
    engines generating in ``param_dtype`` (the policy's, so rollout and training log-probs agree).

    Enter it inside the ``driver`` reaches: its engine row wraps whatever engine class is in place.
    """
    require_worker_hook()
    token = ENGINE_DTYPE.set(vllm_dtype_name(param_dtype))
    try:
        with scoped(Where.CPU_DRIVER):
            yield
    finally:
        ENGINE_DTYPE.reset(token)
