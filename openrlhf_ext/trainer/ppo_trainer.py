"""``ExtPPOTrainer``: OpenRLHF's single-controller PPO trainer with our experience maker.

Differences from stock, all in overridden methods:

* the experience maker is :class:`~openrlhf_ext.trainer.experience_maker.ExtExperienceMaker`;
* the samples generator is :class:`~openrlhf_ext.trainer.rollout_seeds.SeededSamplesGenerator`:
  every request carries its own seed and a rollout is in the order its prompts were drawn;
* a rollout batch in which the filter drops every sample skips the update (no forward, no
  optimizer step) with a warning and ``ext/skipped_step = 1``: an optimizer step on an empty batch
  would still move the weights through Adam's momentum;
* each step adds the rollout metrics of docs/algorithms.md, "Metrics" (``ext/*``), prints one line of them
  (:func:`~openrlhf_ext.reporting.console.format_step_line`) and appends the whole status to
  ``<ckpt.output_dir>/metrics.jsonl``;
* with ``--ext.mlflow_uri``, the configuration, every step's status and the evaluations also go to
  mlflow (:mod:`openrlhf_ext.reporting.mlflow_logger`); stock wandb / TensorBoard logging is untouched.
"""

from __future__ import annotations

import json
import math
import os
import time

import ray
import torch
from openrlhf.trainer.ppo_trainer import PPOTrainer
from openrlhf.utils.logging_utils import init_logger

from openrlhf_ext.reporting.console import format_step_line
from openrlhf_ext.reporting.curves import METRICS_FILE
from openrlhf_ext.reporting.failures import check_rewards
from openrlhf_ext.reporting.mlflow_logger import mlflow_logger_for
from openrlhf_ext.rewards import summarize_logs
from openrlhf_ext.trainer.experience_maker import ExtExperienceMaker, PlannedRollout
from openrlhf_ext.trainer.metrics import reflection_rate
from openrlhf_ext.trainer.rollout_seeds import SeededSamplesGenerator

logger = init_logger(__name__)



def response_texts(samples, tokenizer) -> list[str]:
    """Decoded response of each rollout sample (the action tokens only)."""
    texts = []
    for sample in samples:
        for sequence, action_mask in zip(sample.sequences, sample.action_mask, strict=True):
            response = sequence[1:][: action_mask.numel()][action_mask.bool()]
            texts.append(tokenizer.decode(response, skip_special_tokens=True))
    return texts


REWARD_LOG_KEYS = ("reward_correct", "reward_format_error", "reward_timed_out", "reward_error", "reward_latency_s")


def reward_step_stats(samples) -> dict[str, float]:
    """Format-error rate, timeout count and scoring latency p50/p99 of one step (docs/rewards.md), from the
    per-sample ``extra_logs`` our math reward returns; empty for a reward that does not log them."""
    infos = [sample.info for sample in samples]
    if not infos or not all(key in info for info in infos for key in REWARD_LOG_KEYS):
        return {}
    rewards = [float(v) for sample in samples for v in sample.rewards.reshape(-1)]
    logs = {key: [float(v) for info in infos for v in info[key].reshape(-1)] for key in REWARD_LOG_KEYS}
    return summarize_logs(rewards, logs).as_log_dict("reward/")


def _jsonable(value):
    if isinstance(value, torch.Tensor):
        value = value.float().mean().item() if value.numel() else float("nan")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class NoTrainingStep(RuntimeError):
    """The run ended without a single optimizer step."""


def zero_step_reason(args) -> str:
    """Why a run may end without training, for the error that says it did."""
    if args.algo.dynamic_filtering_enable:
        low, high = args.algo.dynamic_filtering_range
        cause = (f"--algo.dynamic_filtering_enable dropped every prompt group: it keeps a group only when its mean "
                 f"reward is strictly between {low:g} and {high:g} (--algo.dynamic_filtering_range); check that "
                 "range against the reward's values")
    else:
        cause = "every rollout batch was dropped by the filter or the prompts ran out before one batch"
    return f"the run trained 0 steps: {cause}; no model was saved"


class _ExtPPOTrainer(PPOTrainer.__ray_actor_class__):
    def __init__(self, pretrain, strategy, actor_model_group, critic_model_group, reward_model_group,
                 reference_model_group, vllm_engines, **generate_kwargs) -> None:
        super().__init__(pretrain, strategy, actor_model_group, critic_model_group, reward_model_group,
                         reference_model_group, vllm_engines, **generate_kwargs)
        self.experience_maker = ExtExperienceMaker(
            self.actor_model_group, self.critic_model_group, self.reward_model_group,
            self.reference_model_group, self.kl_ctl, self.strategy, self.tokenizer,
        )
        self.samples_generator = SeededSamplesGenerator(
            strategy=strategy, prompts_dataloader=self.prompts_dataloader, eval_dataloader=self.eval_dataloader,
            tokenizer=self.tokenizer, vllm_engines=vllm_engines, seed=self.args.train.seed,
        )
        os.makedirs(self.args.ckpt.output_dir, exist_ok=True)
        self.metrics_path = os.path.join(self.args.ckpt.output_dir, METRICS_FILE)
        self.mlflow_logger = mlflow_logger_for(self.args)
        self.trained_steps = 0

    def fit(self, global_step: int = 0) -> None:
        failed = True  # the mlflow run's end status
        try:
            super().fit(global_step)
            resumed = self.args.ckpt.load_enable and os.path.isdir(os.path.join(self.args.ckpt.path, "_actor"))
            if self.trained_steps == 0 and not resumed:
                # Raised before OpenRLHF's driver saves the (untrained) model as the final one.
                raise NoTrainingStep(zero_step_reason(self.args))
            failed = False
        finally:
            if self.mlflow_logger:
                self.mlflow_logger.close(failed=failed)

    def init_checkpoint_states(self) -> dict:
        states = super().init_checkpoint_states()
        # The prompts drawn before the checkpoint: the seeds of the next ones follow from it.
        self.samples_generator.prompts_drawn = states["total_consumed_prompts"]
        return states

    def evaluate(self, global_step, **generate_kwargs):
        logs = super().evaluate(global_step, **generate_kwargs)
        if self.mlflow_logger:
            self.mlflow_logger.log_eval(global_step, logs)
        return logs

    def train_step(self, rollout_samples, global_step: int):
        check_rewards(rollout_samples, self.args.reward.remote_url)
        reflection = reflection_rate(response_texts(rollout_samples, self.tokenizer))
        reward_stats = reward_step_stats(rollout_samples)
        maker = self.experience_maker
        plan = maker.plan_rollout(rollout_samples)  # once per rollout; the experience maker reuses it
        skipped = plan is not None and plan.all_filtered
        if skipped:
            logger.warning(
                f"step {global_step + 1}: the {maker.grid.filter!r} filter dropped all {len(rollout_samples)} samples; "
                "skipping the update (no optimizer step)"
            )
            metrics = {**plan.groups.stats, **maker.batch_metrics(rollout_samples), "forward_skipped_fraction": 1.0}
            status, global_step = self._compute_rollout_stats(rollout_samples), global_step + 1
        else:
            status, global_step = super().train_step(PlannedRollout(rollout_samples, plan), global_step)
            metrics = maker.last_metrics
            self.trained_steps += 1
        status.update({f"ext/{k}": v for k, v in metrics.items()})
        status.update({"ext/skipped_step": float(skipped), "ext/reflection_rate": reflection, **reward_stats})
        return status, global_step

    def save_logs_and_checkpoints(self, global_step: int, logs_dict=None, client_states=None) -> None:
        if logs_dict:
            # Before the step's checkpoint: a restart from checkpoint N finds the records up to N and
            # drops later ones (job/restarts.py), so every step is in the file once.
            record = {"step": global_step, "time": time.time()}
            record.update({k: _jsonable(v) for k, v in logs_dict.items() if k != "generated_samples"})
            with open(self.metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")
        super().save_logs_and_checkpoints(global_step, logs_dict, client_states)
        if not logs_dict:
            return
        if self.mlflow_logger:
            self.mlflow_logger.log_train(global_step, logs_dict)
        print(format_step_line(global_step, self.planned_steps(), logs_dict), flush=True)

    def planned_steps(self) -> int:
        """Steps of the whole run: one per rollout batch of prompts, every episode (fewer when
        dynamic filtering draws extra prompts)."""
        per_episode = math.ceil(len(self.prompts_dataloader) / self.args.rollout.batch_size)
        return per_episode * self.args.train.num_episodes

    def runtime_classes(self) -> dict[str, str]:
        """Qualified names of the classes running in this worker (for tests and debugging)."""
        return {
            "trainer": f"{type(self).__module__}.{type(self).__qualname__}",
            "experience_maker": f"{type(self.experience_maker).__module__}.{type(self.experience_maker).__qualname__}",
        }


ExtPPOTrainer = ray.remote(_ExtPPOTrainer)
