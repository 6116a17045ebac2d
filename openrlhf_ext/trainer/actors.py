"""Our policy actor: OpenRLHF's ``PolicyModelActor`` whose actor trainer is :class:`ExtActorPPOTrainer`."""

from __future__ import annotations

import ray
import torch
from openrlhf.trainer.ray.ppo_actor import ActorPPOTrainer, PolicyModelActor
from openrlhf.utils.loss_utils import get_loss_batch_info

from openrlhf_ext.reaches import Where, apply
from openrlhf_ext.trainer.policy_loss import ExtPolicyLoss
from openrlhf_ext.trainer.train_rows import SkippingReplayBuffer

# Weight of the metrics of a micro-batch that holds masked rows only (no action token at all).
_EMPTY_MICRO_BATCH_WEIGHT = 1e-6


def _nonzero(value):
    """A normaliser of 0 means every numerator is 0 too: use 1 so the loss is 0, not 0/0 = NaN."""
    if isinstance(value, torch.Tensor):
        return torch.where(value > 0, value, torch.ones_like(value))
    return value if value else 1.0


class ExtActorPPOTrainer(ActorPPOTrainer):
    """OpenRLHF's actor trainer with :class:`ExtPolicyLoss`, whose training skips the rows that cannot
    change the gradient (:mod:`openrlhf_ext.trainer.train_rows`; their number is logged as
    ``train_rows_skipped``).

    A micro-batch, or a whole optimizer-step window, can then hold no action token. Stock code divides
    by those counts; here a zero count makes the (zero) loss 0 and gives the micro-batch's logged
    metrics a vanishing weight, so that the training metrics describe the rows trained.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.actor_loss_fn = ExtPolicyLoss.from_args(self.args)
        # Entropy is always logged (the Minimalist and Tricks-or-Traps papers analyse it): stock
        # computes and logs it whenever the coefficient is not None, and adds it to the loss only
        # when the coefficient is non-zero.
        if self.args.actor.entropy_coef is None:
            self.args.actor.entropy_coef = 0.0
        # Ring attention and tensor parallelism split each row across ranks: a 2-token stub row cannot be split.
        if self.strategy.ring_attn_group is None and self.args.ds.tensor_parallel_size <= 1:
            kl = self.args.algo.kl
            policy_term_only = not (kl.use_loss and kl.init_coef > 0) and self.args.actor.entropy_coef == 0 and not self.aux_loss
            self.replay_buffer = SkippingReplayBuffer.like(self.replay_buffer, policy_term_only=policy_term_only)

    def ppo_train(self, kl_ctl: float):
        if not isinstance(self.replay_buffer, SkippingReplayBuffer):
            return super().ppo_train(kl_ctl)
        self.replay_buffer.rows_skipped = 0
        status = super().ppo_train(kl_ctl)
        status["train_rows_skipped"] = self.strategy.all_reduce(float(self.replay_buffer.rows_skipped), op="sum")
        return status

    def training_step(self, experience, kl_ctl: float, step: int, loss_batch_info=None):
        if loss_batch_info is None:  # dynamic batch: stock would derive the normalisers inside, unguarded
            loss_batch_info = get_loss_batch_info(self.strategy, experience.action_mask, replay_buffer=self.replay_buffer,
                                                  step=step, dynamic_batch=self.args.train.dynamic_batch_enable)
        loss_batch_info = {
            **loss_batch_info,
            "batch_num_tokens": _nonzero(loss_batch_info["batch_num_tokens"]),
            "global_batch_size": _nonzero(loss_batch_info["global_batch_size"]),
        }
        status = super().training_step(experience, kl_ctl, step, loss_batch_info)
        if status["num_action_tokens"] == 0:
            # Its token-weighted metrics (ppo_kl, ppo_clip_ratio, ...) are stock masked means, 0/0 = NaN,
            # and NaN times the vanishing weight below would still make the step's mean NaN.
            metrics, weights = status["metrics"], status["weights"]
            for key, value in metrics.items():
                if weights[key] == "token" and isinstance(value, torch.Tensor):
                    metrics[key] = torch.nan_to_num(value, nan=0.0)
            status["num_samples"] = _EMPTY_MICRO_BATCH_WEIGHT  # a stub row or rows out of the loss
        status["num_action_tokens"] = max(status["num_action_tokens"], _EMPTY_MICRO_BATCH_WEIGHT)
        return status


class _ExtPolicyModelActor(PolicyModelActor.__ray_actor_class__):
    def init_model_from_pretrained(self, strategy, pretrain, max_steps=None, vllm_engines=None):
        # This process hosts only this actor: stock init then builds ExtActorPPOTrainer, and the
        # strategy saves checkpoints atomically (trainer/checkpoints.py).
        apply(Where.POLICY_WORKER)
        super().init_model_from_pretrained(strategy, pretrain, max_steps, vllm_engines)

    def runtime_classes(self) -> dict[str, str]:
        """Qualified names of the classes running in this worker (for tests and debugging)."""

        def name(obj) -> str:
            cls = obj if isinstance(obj, type) else type(obj)
            return f"{cls.__module__}.{cls.__qualname__}"

        classes = {"actor": name(self)}
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            classes["actor_trainer"] = name(trainer)
            classes["policy_loss"] = name(trainer.actor_loss_fn)
        return classes


ExtPolicyModelActor = ray.remote(num_gpus=1)(_ExtPolicyModelActor)
