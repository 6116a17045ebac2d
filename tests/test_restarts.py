"""--ext.max_restarts without Ray: which failures restart, how often, from which checkpoint, and the
metrics file keeping each step once. The real restarts of a run are in test_chaos.py (slow)."""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import traceback
from pathlib import Path

import pytest
import ray
from ray.core.generated.common_pb2 import ActorDeathCause, ActorDiedErrorContext
from ray.exceptions import ActorDiedError, RayError, RayTaskError
from test_resume import save_step

from openrlhf_ext.cli.train_config import resolve_train_config
from openrlhf_ext.job import restarts, run_guard
from openrlhf_ext.job.checks import InputError
from openrlhf_ext.job.restarts import is_actor_fault, run_with_restarts
from openrlhf_ext.job.run_guard import RunGuard, death_error
from openrlhf_ext.reporting.failures import RewardUnavailable, RunFailure, describe_failure


def task_error(cause: BaseException, proctitle: str = "ray::_ExtPPOTrainer.fit", pid: int = 4700) -> RayTaskError:
    """``cause`` as Ray hands it to the caller of the task that raised it: the task's traceback, process
    title, pid and node, an instance of the cause's class."""
    try:
        raise cause
    except BaseException:  # noqa: BLE001 (any error a task raises)
        traceback_text = traceback.format_exc()
    return RayTaskError(proctitle.removeprefix("ray::"), traceback_text, cause, proctitle=proctitle, pid=pid,
                        ip="127.0.0.1").as_instanceof_cause()


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


# What torch 2.13's gloo raises in a rank whose peer process was killed (a two-process all-reduce, one
# process ending with os._exit mid-run).
GLOO_PEER_CLOSED = ("[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer "
                    "[127.0.0.1]:20353. This is typically caused by a remote worker crashing. Check the logs of the "
                    "remote worker before reporting an error. GLHF! \U0001f3d6\ufe0f")
# Ray's death cause of an actor whose worker was killed (kill -9), as the GCS reports it.
KILLED = ("The actor is dead because its worker process has died. Worker exit type: SYSTEM_ERROR Worker exit detail: "
          "Worker unexpectedly exits with a connection error code 2. End of file.")


def gloo_failure_of_surviving_rank() -> RayTaskError:
    """The driver's error when policy rank 0 (pid 4711) is killed mid-step: the controller's ``fit``
    failed with rank 1's (pid 4712) all-reduce error."""
    rank_1 = task_error(RuntimeError(GLOO_PEER_CLOSED), "ray::_ExtPolicyModelActor.fit", pid=4712)
    return task_error(rank_1)


class PollBehindGloo(RunGuard):
    """A guard whose GCS learns that policy rank 0 died only once rank 1's gloo error reached the driver
    (with ``rank_0_died`` False: no actor died at all)."""

    def __init__(self, rank_0_died: bool = True) -> None:
        super().__init__("run")
        self.rank_0_died = rank_0_died
        self.gloo_error_raised = threading.Event()

    def dead_actor_error(self) -> Exception | None:
        if not (self.rank_0_died and self.gloo_error_raised.is_set()):
            return None
        context = ActorDiedErrorContext(reason=ActorDiedErrorContext.WORKER_DIED, class_name="_ExtPolicyModelActor",
                                        pid=4711, node_ip_address="127.0.0.1", actor_id=bytes(ray.ActorID.size()),
                                        error_message=KILLED)
        return death_error({"DeathCause": ActorDeathCause(actor_died_error_context=context)})


class GuardedAttempts:
    """Attempts that fail, then succeed, as launch()'s do: the watched block of the first one raises the
    gloo error of a surviving rank; a Ray error becomes a RunFailure with its one line."""

    def __init__(self, output_dir: str, rank_0_died: bool) -> None:
        self.output_dir, self.rank_0_died, self.count = output_dir, rank_0_died, 0

    def __call__(self) -> None:
        self.count += 1
        if self.count > 1:
            return
        guard = PollBehindGloo(self.rank_0_died)
        try:
            with guard.watching_actors():
                guard.gloo_error_raised.set()
                raise gloo_failure_of_surviving_rank()
        except RayError as err:
            raise RunFailure(describe_failure(err, self.output_dir)) from err


def test_a_gloo_peer_error_ahead_of_the_poll_is_the_dead_actors_fault_and_restarts(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="openrlhf_ext")
    args = config(tmp_path)
    attempts = GuardedAttempts(args.ckpt.output_dir, rank_0_died=True)
    run_with_restarts(args, attempts)
    assert attempts.count == 2  # restarted
    [restart] = [m for m in caplog.messages if m.startswith("restart 1/2 after ")]
    # The killed rank is named, not the rank that saw its socket close.
    assert restart.startswith("restart 1/2 after _ExtPolicyModelActor (pid 4711, node 127.0.0.1) failed: actor died: ")
    assert "4712" not in restart and "Connection closed" not in restart


def test_a_gloo_peer_error_without_a_dead_actor_is_reported_as_is(tmp_path, monkeypatch):
    monkeypatch.setattr(run_guard, "PEER_DEATH_WAIT_S", 0.0)
    args = config(tmp_path)
    attempts = GuardedAttempts(args.ckpt.output_dir, rank_0_died=False)
    with pytest.raises(RunFailure) as failed:
        run_with_restarts(args, attempts)
    assert attempts.count == 1  # not a fault: no restart
    assert str(failed.value).startswith("_ExtPolicyModelActor.fit (pid 4712, node 127.0.0.1) failed: RuntimeError: ")
    assert "Connection closed by peer [127.0.0.1]:20353" in str(failed.value)


REWARD_URL = "http://127.0.0.1:9/get_reward"


class RewardServerDown:
    """``reward_connect_error`` of a server that refuses connections on its first ``down`` checks."""

    def __init__(self, down: int | float) -> None:
        self.down, self.checks = down, 0

    def __call__(self, url: str) -> str | None:
        assert url == REWARD_URL
        self.checks += 1
        return "cannot connect: Connection refused" if self.checks <= self.down else None


@pytest.fixture
def quick_backoff(monkeypatch):
    monkeypatch.setattr(restarts, "_REWARD_BACKOFF_S", (0.01,))


def test_a_restart_after_a_missing_reward_waits_for_the_reward_server(tmp_path, monkeypatch, caplog, quick_backoff):
    caplog.set_level(logging.INFO, logger="openrlhf_ext")
    server = RewardServerDown(down=3)
    monkeypatch.setattr(restarts, "reward_connect_error", server)
    args = config(tmp_path, "--remote_rm_url", REWARD_URL)
    run = Run(args, [([1, 2], [2], RewardUnavailable(f"no reward for 4 of 4 rollout samples from {REWARD_URL}")),
                     ([3], [], None)])
    run_with_restarts(args, run)
    assert server.checks == 4 and run.steps() == [1, 2, 3]
    waiting = [m for m in caplog.messages if "does not accept connections" in m]
    assert waiting == [f"the reward server {REWARD_URL} does not accept connections (cannot connect: Connection "
                       "refused): waiting up to 600 s for it ($OPENRLHF_EXT_REWARD_WAIT_S)"]
    assert f"the reward server is back: {REWARD_URL}" in caplog.messages


def test_a_dead_actor_does_not_wait_for_the_reward_server(tmp_path, monkeypatch, quick_backoff):
    server = RewardServerDown(down=math.inf)
    monkeypatch.setattr(restarts, "reward_connect_error", server)
    args = config(tmp_path, "--remote_rm_url", REWARD_URL)
    run_with_restarts(args, Run(args, [([1], [], ActorDiedError()), ([1], [], None)]))
    assert server.checks == 0


def test_a_reward_server_that_does_not_come_back_ends_the_run_in_one_line(tmp_path, monkeypatch, quick_backoff):
    monkeypatch.setattr(restarts, "reward_connect_error", RewardServerDown(down=math.inf))
    monkeypatch.setenv("OPENRLHF_EXT_REWARD_WAIT_S", "0.2")
    args = config(tmp_path, "--remote_rm_url", REWARD_URL)
    run = Run(args, [([1], [], RewardUnavailable("no reward"))])
    with pytest.raises(RunFailure) as failed:
        run_with_restarts(args, run)
    assert str(failed.value) == (f"the reward server {REWARD_URL} did not come back within 0 s (cannot connect: "
                                 "Connection refused); start it and resume the run with --ckpt.load_enable")


@pytest.mark.parametrize("value", ["soon", "-1", "nan"])
def test_a_bad_reward_wait_is_refused_before_the_run_starts(tmp_path, monkeypatch, value):
    monkeypatch.setenv("OPENRLHF_EXT_REWARD_WAIT_S", value)
    args = config(tmp_path)
    run = Run(args, [([1], [], None)])
    with pytest.raises(InputError, match=r"^\$OPENRLHF_EXT_REWARD_WAIT_S: must be a number of seconds >= 0"):
        run_with_restarts(args, run)
    assert run.seen == []
