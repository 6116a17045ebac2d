"""No process outlives a run, and an actor that dies in its constructor fails the run at once.

The run's processes are found by a marker of the test's own in the driver's environment, which
every process it starts inherits (Ray's GCS, raylet and agents, the workers, vLLM's engine core,
our watchdog), so the check does not rely on the run id of the code under test.
"""

from __future__ import annotations

import _thread
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest

from openrlhf_ext.job import run_guard
from openrlhf_ext.job.run_guard import RUN_ID_ENV, RunGuard, stop_run_processes

MARKER = "OPENRLHF_EXT_TEST_MARKER"
GONE_WITHIN_S = 30.0


def marked(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(MARKER) == marker and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


def describe(procs: list[psutil.Process]) -> list[str]:
    names = []
    for proc in procs:
        try:
            names.append(f"{proc.pid} {' '.join(proc.cmdline())[:80]}")
        except psutil.Error:
            continue
    return names


def wait_until_gone(marker: str, driver: subprocess.Popen, timeout_s: float = GONE_WITHIN_S) -> float:
    """Seconds until no process of the run is left; fails (and kills them) after ``timeout_s``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        driver.poll()  # reap the driver itself
        if not marked(marker):
            return time.monotonic() - start
        time.sleep(0.5)
    left = marked(marker)
    summary = describe(left)
    for proc in left:
        proc.kill()
    raise AssertionError(f"{len(left)} process(es) of the run alive {timeout_s:.0f} s after the driver ended: {summary}")


def test_stop_run_processes_kills_what_ignores_sigterm():
    run_id = uuid.uuid4().hex
    env = {**os.environ, RUN_ID_ENV: run_id}
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); time.sleep(120)"
    procs = [subprocess.Popen([sys.executable, "-c", stubborn], env=env, stdout=subprocess.PIPE),
             subprocess.Popen(["sleep", "120"], env=env)]
    bystander = subprocess.Popen(["sleep", "120"])  # same command, not of the run
    try:
        procs[0].stdout.readline()  # its SIGTERM handler is in place
        stopped = stop_run_processes(run_id, grace_s=1.0)
        assert len(stopped) == 2
        # Both gone, the one that ignores SIGTERM included (stop_run_processes reaped them, as they
        # are this process's children: their exit codes are lost to Popen).
        assert not any(psutil.pid_exists(p.pid) and psutil.Process(p.pid).status() != psutil.STATUS_ZOMBIE
                       for p in procs)
        assert bystander.poll() is None
    finally:
        bystander.kill()


def test_watchdog_stops_the_run_when_its_driver_is_sigkilled(tmp_path):
    """Without Ray: a driver that starts the watchdog and a marked child, then SIGKILLs itself."""
    marker = uuid.uuid4().hex
    driver_code = textwrap.dedent(f"""
        import os, signal, subprocess, sys, uuid
        run_id = uuid.uuid4().hex
        os.environ[{RUN_ID_ENV!r}] = run_id
        subprocess.Popen([sys.executable, "-m", "openrlhf_ext.job.run_guard", str(os.getpid()), run_id],
                         stdin=subprocess.PIPE, start_new_session=True)
        subprocess.Popen(["sleep", "120"])
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    driver = subprocess.Popen([sys.executable, "-c", driver_code], env={**os.environ, MARKER: marker})
    driver.wait(timeout=30)
    assert driver.returncode == -signal.SIGKILL
    assert wait_until_gone(marker, driver, timeout_s=10) < 10


@pytest.mark.slow
def test_death_error_tells_failures_from_intended_ends(local_ray):
    """Real Ray: a constructor that raises and an actor whose worker crashes are failures, with the
    error a call on them raises; ray.kill, exit_actor and a dropped handle are not."""
    import ray
    from ray.exceptions import ActorDiedError, RayError

    from openrlhf_ext.job.run_guard import death_error
    from openrlhf_ext.reporting.failures import summarize_failure

    @ray.remote
    class Probe:
        def __init__(self, fail: bool = False) -> None:
            if fail:
                raise ValueError("no weights in /models/x")

        def ping(self) -> int:
            return 1

        def crash(self) -> None:
            os._exit(3)

        def leave(self) -> None:
            ray.actor.exit_actor()

    # The session's Ray: other tests' dead actors share its job, so only Probes are counted.
    probes = {name: Probe.remote() for name in ("killed", "crashed", "left", "dropped")}
    probes["constructor"] = Probe.remote(fail=True)
    ray.get([p.ping.remote() for name, p in probes.items() if name != "constructor"])
    ray.kill(probes.pop("killed"))
    for name, method in (("crashed", "crash"), ("left", "leave")):
        with pytest.raises(RayError):
            ray.get(getattr(probes[name], method).remote())
    del probes["dropped"]
    with pytest.raises(RayError):
        ray.get(probes["constructor"].ping.remote())
    from ray._private import state

    job = ray.JobID.from_hex(ray.get_runtime_context().get_job_id())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        dead = [info for info in state.actors(job_id=job, actor_state_name="DEAD").values()
                if info["ActorClassName"].endswith("Probe")]
        if len(dead) == 5:
            break
        time.sleep(0.5)
    errors = [death_error(info) for info in dead]
    assert len(errors) == 5 and sum(e is not None for e in errors) == 2, errors
    causes = [summarize_failure(e)[1] for e in errors if e is not None]
    assert all(isinstance(e, ActorDiedError) for e in errors if e is not None)
    assert any(cause.startswith("actor died: ") and "exit" in cause for cause in causes), causes  # the crash
    assert "actor died in its constructor: ValueError: no weights in /models/x" in causes, causes


# ---------------------------------------------------------------------------------------------
# Real runs of the CLI on the tiny model (slow: Ray and four actors start on 2 cores)

ACTOR_PREFIXES = ("ray::_ExtPolicyModelActor", "ray::ReferenceModelActor", "ray::_ExtPPOTrainer", "ray::RolloutRayActor")


def start_run(tiny_model_dir: str, tmp_path: Path, marker: str, **env: str) -> tuple[subprocess.Popen, Path]:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(f'{{"problem": "What is {i} + {i}?", "answer": "{2 * i}"}}\n' for i in range(8)))
    log = tmp_path / "driver.log"
    # A user's command: no layout flags (the CPU layout sizes them), many episodes so that the run is
    # still going when the test kills it.
    flags = ["--pretrain", tiny_model_dir, "--prompt_data", str(prompts), "--input_key", "problem", "--label_key",
             "answer", "--n_samples_per_prompt", "2", "--advantage_estimator", "group_norm", "--rollout_batch_size",
             "4", "--micro_rollout_batch_size", "4", "--train_batch_size", "8", "--micro_train_batch_size", "4",
             "--generate_max_len", "8", "--max_len", "128", "--num_episodes", "100", "--save_path", str(tmp_path / "out")]
    driver = subprocess.Popen([sys.executable, "-m", "openrlhf_ext.cli.train_ppo_ray", *flags],
                              env={**os.environ, MARKER: marker, **env}, stdout=log.open("w"), stderr=subprocess.STDOUT)
    return driver, log


def wait_for_actors(marker: str, driver: subprocess.Popen, log: Path, timeout_s: float = 400) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert driver.poll() is None, f"the run ended early:\n{log.read_text()[-3000:]}"
        started = {prefix for prefix in ACTOR_PREFIXES for line in describe(marked(marker)) if prefix in line}
        if len(started) == len(ACTOR_PREFIXES):
            return
        time.sleep(1)
    raise AssertionError(f"actors not up after {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_no_process_outlives_the_driver(tiny_model_dir, tmp_path, signum):
    marker = uuid.uuid4().hex
    driver, log = start_run(tiny_model_dir, tmp_path, marker)
    try:
        wait_for_actors(marker, driver, log)
        layout_line = next(line for line in log.read_text().splitlines() if "--actor.num_gpus_per_node 1" in line)
        assert "--ref.num_gpus_per_node 1" in layout_line and "no GPU: sized to this machine" in layout_line
        driver.send_signal(signum)
        seconds = wait_until_gone(marker, driver)
    finally:
        for proc in marked(marker):
            proc.kill()
    if signum != signal.SIGKILL:  # an orderly stop: the signal's exit code, one line, no traceback
        driver.wait(timeout=30)  # an exited driver not yet reaped is a zombie, which marked() does not list
        assert driver.returncode == 128 + signum, log.read_text()[-3000:]
        assert f"{signum.name}: stopping the run" in log.read_text()
    print(f"{signum.name}: every process of the run gone {seconds:.1f} s after the signal")


@pytest.mark.slow
def test_an_engine_that_dies_in_its_constructor_fails_the_run_at_once(tiny_model_dir, tmp_path):
    """Only the vLLM engine fails (vLLM reads VLLM_CPU_KVCACHE_SPACE as an integer); the policy
    would wait for it at the weight-sync rendezvous for the group's 10-minute timeout."""
    marker = uuid.uuid4().hex
    driver, log = start_run(tiny_model_dir, tmp_path, marker, VLLM_CPU_KVCACHE_SPACE="1.5")
    try:
        driver.wait(timeout=400)
        wait_until_gone(marker, driver)
    finally:
        for proc in marked(marker):
            proc.kill()
    text = log.read_text()
    assert driver.returncode == 1, text[-3000:]
    error = [line for line in text.splitlines() if ": error: " in line]
    assert len(error) == 1, text[-3000:]
    assert "RolloutRayActor" in error[0] and "1.5" in error[0], error[0]


class LateWatcher(RunGuard):
    """A watcher whose dead-actor interrupt lands after the watched block has ended: the driver saw the
    dead actor first (its ray.get raised) and the watcher's poll came a moment later."""

    def _poll_dead_actors(self, stop) -> None:
        stop.wait()
        self.failure = RuntimeError("the policy actor died")
        _thread.interrupt_main(signal.SIGTERM)


def test_a_late_watcher_interrupt_keeps_the_drivers_own_error():
    guard = LateWatcher("run")
    with pytest.raises(ValueError, match="driver's error"), guard.watching_actors():
        raise ValueError("the driver's error")  # not a KeyboardInterrupt (read as the user's Ctrl-C)


def test_a_late_watcher_interrupt_after_a_clean_end_fails_with_the_actors_error():
    guard = LateWatcher("run")
    with pytest.raises(RuntimeError, match="policy actor died"), guard.watching_actors():
        pass


class StuckGcsQuery(RunGuard):
    """A watcher inside a GCS query that does not answer (Ray makes them without a timeout) until
    ``answered`` is set."""

    def __init__(self) -> None:
        super().__init__("run")
        self.querying, self.answered = threading.Event(), threading.Event()

    def dead_actor_error(self) -> Exception | None:
        self.querying.set()
        self.answered.wait()
        return None


def test_a_ctrl_c_does_not_wait_for_the_watchers_gcs_query():
    guard = StuckGcsQuery()
    late_answer = threading.Timer(60, guard.answered.set)  # the GCS answers a minute later
    late_answer.start()
    try:
        with pytest.raises(KeyboardInterrupt), guard.watching_actors():
            assert guard.querying.wait(30)
            raise KeyboardInterrupt  # the user's Ctrl-C, the watcher stuck in its query
        assert not guard.answered.is_set()  # the block was left while the query still hung
    finally:
        late_answer.cancel()
        guard.answered.set()


def test_a_ray_shutdown_that_hangs_on_a_process_of_the_run_does_not_keep_the_run_alive(monkeypatch):
    """Ray's shutdown waiting on a process of the run that does not end by itself: the watchdog sweeps
    the run's processes anyway (SHUTDOWN_S after the stop began), which ends the wait."""
    import ray

    monkeypatch.setattr(run_guard, "SHUTDOWN_S", 0.5)
    monkeypatch.setenv(RUN_ID_ENV, "")  # guarded_run sets it; restored after the test
    waited: list[int | None] = []

    def hanging_shutdown() -> None:
        try:
            waited.append(process.wait(timeout=120))
        except subprocess.TimeoutExpired:
            waited.append(None)

    monkeypatch.setattr(ray, "shutdown", hanging_shutdown)
    with run_guard.guarded_run():
        process = subprocess.Popen(["sleep", "300"])  # a process of the run: it carries the run id
    assert waited == [-signal.SIGTERM]  # the sweep's SIGTERM ended it
