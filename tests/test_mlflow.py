"""mlflow tracking, ``--ext.mlflow_uri`` (issue 15, part 4), read back with mlflow's own client.

The trainer's real logging methods run on a trainer object made without its Ray-side start-up
(``__init__`` would start vLLM and DeepSpeed): ``save_logs_and_checkpoints`` (our metrics file,
mlflow, and stock OpenRLHF's wandb / TensorBoard path via ``super()``) and ``fit`` (the run's end
status). The configuration is the real CLI's, and the store is the default SQLite file the bare
flag selects.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from openrlhf.trainer.ppo_trainer import PPOTrainer
from openrlhf.utils.logging_utils import TensorboardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from openrlhf_ext.cli.train_config import resolve_train_config
from openrlhf_ext.reporting.mlflow_logger import DEFAULT_EXPERIMENT, mlflow_logger_for, tracking_uri
from openrlhf_ext.trainer.ppo_trainer import _ExtPPOTrainer

STEPS = [
    {"ext/reward_mean": 0.25, "ext/correct_fraction": 0.5, "kl": torch.tensor(0.02),
     "ext/response_length_correct": float("nan"), "timing/step_total": 12.5, "ext/skipped_step": 0.0,
     "generated_samples": ["1+1 = 2", 1.0]},
    {"ext/reward_mean": 0.5, "ext/correct_fraction": 0.75, "kl": torch.tensor(0.04),
     "ext/response_length_correct": 31.0, "timing/step_total": 11.0, "ext/skipped_step": 1.0},
]


PROMPTS = 40


def trainer_for(flags: list[str]) -> _ExtPPOTrainer:
    """The trainer's logging state as its ``__init__`` sets it, for the real CLI configuration."""
    args = resolve_train_config(flags)
    trainer = object.__new__(_ExtPPOTrainer)
    trainer.args = args
    trainer.wandb_logger = None
    trainer.tensorboard_logger = TensorboardLogger(args)
    trainer.metrics_path = str(Path(args.ckpt.output_dir) / "metrics.jsonl")
    trainer.mlflow_logger = mlflow_logger_for(args)
    trainer.trained_steps = len(STEPS)
    trainer.prompts_dataloader = range(PROMPTS)  # stock's loader yields one prompt at a time
    return trainer


@pytest.fixture
def run_flags(tmp_path) -> list[str]:
    Path(tmp_path / "out").mkdir()
    return ["--advantage_estimator", "reinforce_rej", "--actor.adam.lr", "3e-6", "--ckpt.output_dir",
            str(tmp_path / "out"), "--logger.tensorboard_dir", str(tmp_path / "tb"), "--logger.wandb.run_name",
            "rej-test", "--ckpt.save_steps", "1000"]


def test_default_store_is_sqlite_in_the_output_dir(tmp_path):
    assert tracking_uri("", str(tmp_path)) == f"sqlite:///{tmp_path}/mlflow.db"
    assert tracking_uri("http://mlflow:5000", str(tmp_path)) == "http://mlflow:5000"


def test_no_flag_no_mlflow(run_flags):
    assert mlflow_logger_for(resolve_train_config(run_flags)) is None


def test_params_and_every_step_metric_read_back(run_flags, tmp_path, monkeypatch, capsys):
    trainer = trainer_for([*run_flags, "--ext.mlflow_uri"])
    for step, status in enumerate(STEPS, start=1):
        trainer.save_logs_and_checkpoints(step, dict(status))
    # The console's step line, out of the whole run's steps (one per rollout batch, every episode).
    args = trainer.args
    total = math.ceil(PROMPTS / args.rollout.batch_size) * args.train.num_episodes
    assert [line.split("]")[0] for line in capsys.readouterr().out.splitlines() if line.startswith("[step")] == [
        f"[step 1/{total}", f"[step 2/{total}"]
    trainer.mlflow_logger.log_eval(2, {"eval_accuracy": 0.4})
    # fit() ends the run; the training loop itself is stock OpenRLHF's, stood in for here.
    monkeypatch.setattr(PPOTrainer.__ray_actor_class__, "fit", lambda self, global_step=0: None)
    trainer.fit()

    uri = f"sqlite:///{tmp_path}/out/mlflow.db"
    client = MlflowClient(tracking_uri=uri)
    (run,) = client.search_runs([client.get_experiment_by_name(DEFAULT_EXPERIMENT).experiment_id])
    assert run.info.run_name == "rej-test" and run.info.status == "FINISHED"
    params = run.data.params
    assert params["algo.advantage.estimator"] == "reinforce_rej"
    assert float(params["actor.adam.lr"]) == 3e-6
    assert params["ext.filter"] == "both"  # resolved by the preset, not only what was typed
    assert params["ext.mlflow_uri"] == ""

    def history(key: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, key))

    assert history("train/ext/reward_mean") == [(1, 0.25), (2, 0.5)]
    assert history("train/kl") == [(1, pytest.approx(0.02)), (2, pytest.approx(0.04))]  # 0-d tensors
    assert history("train/ext/skipped_step") == [(1, 0.0), (2, 1.0)]
    nan_step, real_step = history("train/ext/response_length_correct")
    assert math.isnan(nan_step[1]) and real_step == (2, 31.0)
    assert history("eval/eval_accuracy") == [(2, 0.4)]
    # Every numeric entry of every step, nothing else (the text sample is not a metric).
    numeric = {f"train/{k}" for status in STEPS for k in status if k != "generated_samples"}
    assert set(run.data.metrics) == numeric | {"eval/eval_accuracy"}

    # Stock TensorBoard logging still ran, with the same keys.
    trainer.tensorboard_logger.close()
    events = EventAccumulator(str(tmp_path / "tb" / "rej-test"))
    events.Reload()
    assert {"train/ext/reward_mean", "train/kl"} <= set(events.Tags()["scalars"])
    assert [e.value for e in events.Scalars("train/ext/reward_mean")] == [0.25, 0.5]


def test_a_failed_run_ends_failed(run_flags, tmp_path, monkeypatch):
    trainer = trainer_for([*run_flags, "--ext.mlflow_uri", f"sqlite:///{tmp_path}/elsewhere.db"])

    def crash(self, global_step=0):
        raise RuntimeError("a rollout worker died")

    monkeypatch.setattr(PPOTrainer.__ray_actor_class__, "fit", crash)
    with pytest.raises(RuntimeError, match="rollout worker"):
        trainer.fit()
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/elsewhere.db")
    (run,) = client.search_runs([client.get_experiment_by_name(DEFAULT_EXPERIMENT).experiment_id])
    assert run.info.status == "FAILED"
    assert not (tmp_path / "out" / "mlflow.db").exists()  # the URI given, not the default
