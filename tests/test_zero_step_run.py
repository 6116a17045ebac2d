"""A run that trains no step fails (before OpenRLHF's driver saves the untrained model as the final one)."""

from __future__ import annotations

import pytest
from openrlhf.trainer.ppo_trainer import PPOTrainer

from openrlhf_ext.cli.train_config import resolve_train_config
from openrlhf_ext.trainer.ppo_trainer import NoTrainingStep, _ExtPPOTrainer


def trainer_after(monkeypatch, tmp_path, trained: int, *flags: str) -> _ExtPPOTrainer:
    """Our trainer whose stock ``fit`` loop ran ``trained`` optimizer steps (as counted by train_step)."""
    args = resolve_train_config(["--pretrain", "/m", "--prompt_data", "/d.jsonl", "--remote_rm_url", "/r.py",
                                 "--advantage_estimator", "group_norm", "--n_samples_per_prompt", "4",
                                 "--ckpt_path", str(tmp_path / "ckpt"), *flags])

    def stock_fit(self, global_step=0):
        self.trained_steps += trained

    monkeypatch.setattr(PPOTrainer.__ray_actor_class__, "fit", stock_fit)
    trainer = object.__new__(_ExtPPOTrainer)
    trainer.args, trainer.trained_steps, trainer.mlflow_logger = args, 0, None
    return trainer


def test_dynamic_filtering_that_keeps_nothing_fails_naming_the_range(monkeypatch, tmp_path):
    trainer = trainer_after(monkeypatch, tmp_path, 0, "--dynamic_filtering")
    with pytest.raises(NoTrainingStep) as info:
        trainer.fit()
    message = str(info.value)
    assert message.startswith("the run trained 0 steps: --algo.dynamic_filtering_enable dropped every prompt group")
    assert "strictly between 0 and 1 (--algo.dynamic_filtering_range)" in message and "no model was saved" in message


def test_all_batches_filtered_fails(monkeypatch, tmp_path):
    with pytest.raises(NoTrainingStep, match="every rollout batch was dropped"):
        trainer_after(monkeypatch, tmp_path, 0).fit()


def test_a_trained_or_resumed_run_passes(monkeypatch, tmp_path):
    trainer_after(monkeypatch, tmp_path, 2).fit()
    (tmp_path / "ckpt" / "_actor").mkdir(parents=True)  # resumed at the end of a finished run: nothing left to do
    trainer_after(monkeypatch, tmp_path, 0, "--load_checkpoint").fit()
