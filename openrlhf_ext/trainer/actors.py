"""Our policy actor: OpenRLHF's ``PolicyModelActor`` with the extended policy loss."""

from __future__ import annotations

import ray
from openrlhf.trainer.ray.ppo_actor import PolicyModelActor

from openrlhf_ext.trainer.policy_loss import ExtPolicyLoss


class _ExtPolicyModelActor(PolicyModelActor.__ray_actor_class__):
    def init_model_from_pretrained(self, strategy, pretrain, max_steps=None, vllm_engines=None):
        super().init_model_from_pretrained(strategy, pretrain, max_steps, vllm_engines)
        self.trainer.actor_loss_fn = ExtPolicyLoss.from_args(strategy.args)

    def runtime_classes(self) -> dict[str, str]:
        """Qualified names of the classes running in this worker (for tests and debugging)."""

        def name(obj) -> str:
            cls = obj if isinstance(obj, type) else type(obj)
            return f"{cls.__module__}.{cls.__qualname__}"

        classes = {"actor": name(self)}
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            classes["policy_loss"] = name(trainer.actor_loss_fn)
        return classes


ExtPolicyModelActor = ray.remote(num_gpus=1)(_ExtPolicyModelActor)
