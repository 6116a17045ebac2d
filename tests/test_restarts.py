"""--ext.max_restarts without Ray: which failures restart, how often, from which checkpoint, and the
metrics file keeping each step once. The real restarts of a run are in test_chaos.py (slow)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from ray.exceptions import ActorDiedError, RayTaskError
from test_resume import save_step

from openrlhf_ext.cli.train_config import resolve_train_config
from openrlhf_ext.job.restarts import is_actor_fault, run_with_restarts
from openrlhf_ext.reporting.failures import RewardUnavailable, RunFailure


def task_error(cause: BaseException) -> RayTaskError:
    return RayTaskError("fit", "Traceback ...", cause).as_instanceof_cause()


def failure(cause: BaseException) -> RunFailure:
    try:
        raise RunFailure(f"_ExtPPOTrainer.fit failed: {type(cause).__name__}") from task_error(cause)
    except RunFailure as err:
        return err


def test_actor_deaths_and_missing_rewards_are_faults_bugs_are_not():
    assert is_actor_fault(task_error(ActorDiedError()))
    assert is_actor_fault(task_error(RewardUnavailable("no reward for 4 of 4 rollout samples")))
    assert is_actor_fault(ActorDiedError())
    assert not is_actor_fault(task_error(ValueError("shape mismatch")))
    assert not is_actor_fault(None)


def config(tmp_path: Path, *flags: str):
    return resolve_train_config(["--pretrain", "/m", "--prompt_data", "/d.jsonl", "--remote_rm_url", "/r.py",
                                 "--advantage_estimator", "reinforce", "--zero_stage", "3", "--save_steps", "2",
                                 "--ckpt_path", str(tmp_path / "ckpt"), "--save_path", str(tmp_path / "out"), *flags])


class Run:
    """Attempts that append metrics, save checkpoints and fail as scripted."""

    def __init__(self, args, script: list[tuple[list[int], list[int], BaseException | None]]):
        self.args, self.script, self.seen = args, list(script), []
        self.metrics = Path(args.ckpt.output_dir) / "metrics.jsonl"
        self.metrics.parent.mkdir(parents=True, exist_ok=True)

    def steps(self) -> list[int]:
        return [json.loads(line)["step"] for line in self.metrics.read_text().splitlines()]

    def __call__(self) -> None:
        steps, saves, error = self.script.pop(0)
        actor = Path(self.args.ckpt.path) / "_actor"
        self.seen.append((self.args.ckpt.load_enable, self.steps() if self.metrics.exists() else []))
        for step in steps:
            with self.metrics.open("a") as f:
                f.write(json.dumps({"step": step}) + "\n")
            if step in saves:
                save_step(actor, step)
        if error is not None:
            raise failure(error)


def test_a_dead_actor_restarts_from_the_newest_checkpoint_and_metrics_keep_each_step_once(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="openrlhf_ext")
    args = config(tmp_path)
    run = Run(args, [([1, 2, 3], [2], ActorDiedError()),
                     ([3, 4, 5], [4], RewardUnavailable("no reward")),
                     ([5, 6], [6], None)])
    with run.metrics.open("a") as f:
        f.write('{"step": 1, "cut off by a ki')  # a line a kill left half-written
    run_with_restarts(args, run)
    assert run.steps() == [1, 2, 3, 4, 5, 6]
    # Each restart resumed, and saw the records up to its checkpoint only.
    assert run.seen == [(False, []), (True, [1, 2]), (True, [1, 2, 3, 4])]
    assert "restart 1/2 after _ExtPPOTrainer.fit failed: ActorDiedError" in caplog.text
    assert "restart 2/2: resuming after step 4" in caplog.messages


def test_a_bug_is_not_restarted_and_restarts_stop_at_the_limit(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="openrlhf_ext")
    args = config(tmp_path)
    run = Run(args, [([1], [], ValueError("bug"))])
    with pytest.raises(RunFailure, match="ValueError"):
        run_with_restarts(args, run)
    assert "restart" not in caplog.text
    args = config(tmp_path, "--ext.max_restarts", "1")
    run = Run(args, [([1, 2], [2], ActorDiedError()), ([3], [], ActorDiedError())])
    with pytest.raises(RunFailure, match="ActorDiedError"):
        run_with_restarts(args, run)
    assert "restart 1/1 after" in caplog.text and not run.script


def test_a_fresh_run_never_restarts_from_an_older_runs_checkpoint(tmp_path):
    args = config(tmp_path)
    old = save_step(Path(args.ckpt.path) / "_actor", 8)  # a previous run's, in the same folder
    os.utime(old.parent / "latest", (0, 0))
    run = Run(args, [([1], [], ActorDiedError()), ([1, 2], [], None)])
    run_with_restarts(args, run)
    assert run.seen[1] == (False, []) and run.steps() == [1, 2]
