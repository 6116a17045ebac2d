"""The injection surface: every place openrlhf-ext reaches into OpenRLHF 0.11.2, in one table.

We run OpenRLHF's own driver, ``openrlhf.cli.train_ppo_ray.train(args)``. It looks up the policy
actor class and the trainer class at call time, in the driver, from the module attributes below;
:func:`injected` points them at our subclasses for the duration of the call. The Ray workers never
see these patches and need not: the classes are pickled by reference to ``openrlhf_ext`` modules,
so each worker imports and runs our code. Inside the workers our subclasses override methods:

* :class:`~openrlhf_ext.trainer.ppo_trainer.ExtPPOTrainer` builds
  :class:`~openrlhf_ext.trainer.experience_maker.ExtExperienceMaker` (advantages of SPEC §1,
  filtering, rollout metrics) and skips all-filtered batches;
* :class:`~openrlhf_ext.trainer.actors.ExtPolicyModelActor` builds
  :class:`~openrlhf_ext.trainer.actors.ExtActorPPOTrainer` (a worker-side, scoped swap of
  ``openrlhf.trainer.ray.ppo_actor.ActorPPOTrainer`` during model init), whose loss is
  :class:`~openrlhf_ext.trainer.policy_loss.ExtPolicyLoss` (``vanilla`` loss, the
  seq-mean-token-sum(-norm) aggregations) and which tolerates micro-batches of masked rows.

On a machine without CUDA, :mod:`openrlhf_ext.trainer.cpu` adds its own (also tabled) patches.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

# (module, attribute, replacement "module:attribute")
DRIVER_PATCHES: tuple[tuple[str, str, str], ...] = (
    ("openrlhf.trainer.ppo_trainer", "PPOTrainer", "openrlhf_ext.trainer.ppo_trainer:ExtPPOTrainer"),
    ("openrlhf.cli.train_ppo_ray", "PolicyModelActor", "openrlhf_ext.trainer.actors:ExtPolicyModelActor"),
)


def _resolve(spec: str):
    module, attr = spec.split(":")
    return getattr(importlib.import_module(module), attr)


@contextmanager
def swapped(owner: object, attr: str, value: object) -> Iterator[None]:
    """Set ``owner.attr`` to ``value`` for the duration of the block, then restore it."""
    original = getattr(owner, attr)
    setattr(owner, attr, value)
    try:
        yield
    finally:
        setattr(owner, attr, original)


@contextmanager
def injected() -> Iterator[None]:
    """Point OpenRLHF's driver at our classes; restore the originals afterwards."""
    with ExitStack() as stack:
        for module_name, attr, replacement in DRIVER_PATCHES:
            module = importlib.import_module(module_name)
            if not hasattr(module, attr):
                raise RuntimeError(f"{module_name}.{attr} no longer exists: OpenRLHF changed its injection points")
            stack.enter_context(swapped(module, attr, _resolve(replacement)))
        yield
