"""A training run's processes end with its driver, and a dead actor ends the run at once.

Three parts, used by :func:`openrlhf_ext.job.launch.launch`:

* **Run id.** :func:`guarded_run` puts :data:`RUN_ID_ENV` in the driver's environment before Ray
  starts, so every process of the run inherits it: the local Ray the driver starts (GCS, raylet,
  agents), every worker and what they spawn (vLLM's engine core). That is how the run's processes
  are found, by the watchdog here and by the tests; nothing else on the machine carries the id.
* **Watchdog.** A small process (``python -m openrlhf_ext.job.run_guard DRIVER_PID RUN_ID``)
  in its own session, so that a terminal's Ctrl-C does not stop it before it has done its work.
  When the driver is gone, however it ended (normal exit, exception, SIGINT/SIGTERM or SIGKILL),
  or when the driver closes its stdin at the end of the run (after ``ray.shutdown()``, or
  :data:`SHUTDOWN_S` into one that hangs), it terminates every process still carrying the run id
  and kills what is left after :data:`GRACE_S`. Ray's own clean-up is not
  enough: after a SIGKILL of the driver its dashboard and runtime-env agents lingered for ~60 s,
  and after a normal ``ray.shutdown()`` the actors (vLLM's worker too) were still running.
* **Signals and actor deaths.** Ray's blocking ``ray.get`` gives way only to KeyboardInterrupt
  (any other exception raised by a signal handler surfaces later as a ``SystemError``, after the
  get returns, which may be never). So SIGTERM, which Ray's driver turns into ``sys.exit``, is
  turned into KeyboardInterrupt, and :meth:`RunGuard.watching_actors` runs a thread that polls the
  GCS for actors of this job that died (in their constructor, killed for memory, worker crash) and
  interrupts the main thread the same way; the interrupted call then raises the dead actor's own
  error, as Ray would have built it. Without this, the driver waits as long as the actor it waits
  on waits for a dead one (a policy rank at the weight-sync rendezvous with an engine that never
  started: the group's 10-minute timeout). The other way round, a rank in a gloo group with the dead
  actor (a policy rank's peer, the engine receiving the weights) can fail with "Connection closed by
  peer" before the GCS has marked the actor dead: such an error waits for the poll to name the dead
  actor, whose death is then the run's failure.
"""

from __future__ import annotations

import _thread
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from openrlhf_ext.reporting.console import configure_logging, show_log_path
from openrlhf_ext.reporting.failures import gloo_peer_lost

RUN_ID_ENV = "OPENRLHF_EXT_RUN_ID"
GRACE_S = 3.0  # SIGTERM -> SIGKILL
PARENT_POLL_S = 0.5  # the watchdog's check of its parent
WATCH_S = 1.0  # the driver's poll of dead actors
# How long a gloo error naming a lost peer waits for the GCS to report the peer's actor dead: a killed
# worker's death reaches it within a second or two; a lost node's only after its health checks fail.
PEER_DEATH_WAIT_S = 30.0
SWEEP_ROUNDS = 5  # processes can be spawned while the run is torn down: sweep until none is left
SHUTDOWN_S = 15.0  # Ray's own shutdown of a run takes 1-3 s (up to ~10 s on a loaded 2-core machine)
WATCHDOG_WAIT_S = SWEEP_ROUNDS * (GRACE_S + 1)
INTENDED_EXIT = "Worker exit type: INTENDED_USER_EXIT"

# By module name, not __name__: the watchdog runs this module as __main__.
logger = logging.getLogger("openrlhf_ext.job.run_guard")


# ---------------------------------------------------------------------------------------------
# Finding and stopping the run's processes (watchdog side)


def run_processes(run_id: str) -> list:
    """Every process (but this one) whose environment carries ``run_id``."""
    import psutil

    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if proc.environ().get(RUN_ID_ENV) == run_id:
                found.append(proc)
        except (psutil.Error, OSError):  # gone, a zombie, or another user's
            continue
    return found


def stop_run_processes(run_id: str, grace_s: float = GRACE_S) -> list[str]:
    """Terminate, then kill after ``grace_s``, every process of the run; returns their names."""
    import psutil

    stopped = []
    for _ in range(SWEEP_ROUNDS):
        procs = run_processes(run_id)
        if not procs:
            break
        for proc in procs:
            try:
                stopped.append(proc.name())
                proc.terminate()
            except psutil.Error:
                continue
        _, alive = psutil.wait_procs(procs, timeout=grace_s)
        for proc in alive:
            try:
                proc.kill()
            except psutil.Error:
                continue
        psutil.wait_procs(alive, timeout=grace_s)
    return stopped


def watch(driver_pid: int, run_id: str) -> None:
    """The watchdog: wait for the driver to end or close our stdin, then stop the run's processes."""
    while os.getppid() == driver_pid:
        readable, _, _ = select.select([sys.stdin], [], [], PARENT_POLL_S)
        if readable and not sys.stdin.buffer.read1(1):  # EOF: the driver is done with the run
            break
    stopped = stop_run_processes(run_id)
    if stopped:
        # The reader of a dead driver's stderr may be gone too: logging swallows the write error.
        logger.info("run %s: stopped %d leftover process(es) of the run: %s", run_id[:8], len(stopped),
                    ", ".join(sorted(set(stopped))))


# ---------------------------------------------------------------------------------------------
# Driver side


def death_error(info: dict[str, Any]) -> Exception | None:
    """The error a call on this dead actor raises (as Ray builds it from the death cause), or None
    for an intended end (``ray.kill``, ``exit_actor``, out of scope, its owner gone: that owner's
    death is the cause)."""
    from ray.core.generated.common_pb2 import ActorDiedErrorContext
    from ray.exceptions import ActorDiedError, RayError

    cause = info["DeathCause"]
    kind = cause.WhichOneof("context")
    if kind == "creation_task_failure_context":
        return RayError.from_ray_exception(cause.creation_task_failure_context)
    if kind == "actor_died_error_context":
        context = cause.actor_died_error_context
        failed = (ActorDiedErrorContext.UNSPECIFIED, ActorDiedErrorContext.WORKER_DIED, ActorDiedErrorContext.NODE_DIED)
        # ray.actor.exit_actor() is a WORKER_DIED too; only Ray's message tells it apart.
        intended = INTENDED_EXIT in context.error_message
        return ActorDiedError(cause=context) if context.reason in failed and not intended else None
    if kind in ("oom_context", "runtime_env_failed_context", "actor_unschedulable_context"):
        context = ActorDiedErrorContext(
            class_name=info["ActorClassName"], pid=info["Pid"], node_ip_address=info["Address"]["IPAddress"],
            actor_id=bytes.fromhex(info["ActorID"]), error_message=getattr(cause, kind).error_message,
        )
        return ActorDiedError(cause=context)
    return None


class RunGuard:
    """What :func:`guarded_run` yields: the run id and the actor watch."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.signum: int | None = None  # the signal that interrupted the run (None: SIGINT or none)
        self.failure: Exception | None = None  # the first dead actor's error
        self._watch_lock = threading.Lock()  # the watcher interrupts the main thread only while it watches

    def _on_sigterm(self, signum: int, frame: Any) -> None:  # noqa: ARG002 (signal handler signature)
        if self.failure is None:
            self.signum = signum
        raise KeyboardInterrupt

    def dead_actor_error(self) -> Exception | None:
        """The error of the first actor of this job that died (a query of the GCS), or None."""
        import ray
        from ray._private import state

        job_id = ray.JobID.from_hex(ray.get_runtime_context().get_job_id())
        for info in state.actors(job_id=job_id, actor_state_name="DEAD").values():
            error = death_error(info)
            if error is not None:
                return error
        return None

    def _poll_dead_actors(self, stop: threading.Event) -> None:
        while not stop.wait(WATCH_S):
            try:
                error = self.dead_actor_error()
            except Exception:  # noqa: BLE001  (Ray shutting down under us: the main thread sees why)
                return
            if error is not None:
                with self._watch_lock:
                    if not stop.is_set():  # else the watched block has ended, with the driver's own error
                        self.failure = error
                        _thread.interrupt_main(signal.SIGTERM)  # runs _on_sigterm in the main thread
                return

    def _await_dead_actor(self) -> Exception | None:
        """The first dead actor's error, polled for up to :data:`PEER_DEATH_WAIT_S` (None: no actor died)."""
        deadline = time.monotonic() + PEER_DEATH_WAIT_S
        while True:
            try:
                error = self.dead_actor_error()
            except Exception:  # noqa: BLE001  (Ray is going down: no actor to name, the error stands)
                return None
            if error is not None or time.monotonic() >= deadline:
                return error
            time.sleep(WATCH_S)

    def _stop_watching(self, stop: threading.Event, watcher: threading.Thread) -> None:
        try:
            with self._watch_lock:
                stop.set()  # from here on the watcher interrupts no more: no need to wait for it
            # Bounded: the watcher may be inside a GCS query, which Ray makes without a timeout, and the
            # stop (a Ctrl-C's included) must not wait on it. The join is where an interrupt the watcher
            # sent before the stop lands.
            watcher.join(timeout=WATCH_S)
        except KeyboardInterrupt as interrupt:
            # The watcher's interrupt, landing after the block ended (the driver saw the dead actor
            # first, e.g. in ray.get): a user's Ctrl-C or SIGTERM has no failure set.
            if self.failure is None:
                raise
            if interrupt.__context__ is None:  # the block had ended without an error: fail it now
                raise self.failure from None

    @contextmanager
    def watching_actors(self) -> Iterator[None]:
        """While the block runs, the first actor of this job that dies raises its error in it."""
        # Again now that Ray is up: ray.init replaced ours with its own (sys.exit, see above).
        signal.signal(signal.SIGTERM, self._on_sigterm)
        stop = threading.Event()
        watcher = threading.Thread(target=self._poll_dead_actors, args=(stop,), name="actor-watch", daemon=True)
        watcher.start()
        try:
            yield
        except KeyboardInterrupt:
            if self.failure is not None:
                raise self.failure from None
            raise
        except Exception as err:
            if not gloo_peer_lost(err):
                raise
            # A rank whose gloo peer died reports it before the GCS knows the peer is dead, so before
            # the poll names the dead actor: the death is the failure (a restart gets past it), the
            # surviving rank's error only its echo. No actor dead: the gloo error is the failure.
            self._stop_watching(stop, watcher)
            failure = self.failure or self._await_dead_actor()
            if failure is None:
                raise
            raise failure from err
        finally:
            self._stop_watching(stop, watcher)


@contextmanager
def guarded_run() -> Iterator[RunGuard]:
    """Mark this run's processes, start the watchdog, turn SIGTERM into an orderly stop; on the way
    out (any way) stop Ray and every process of the run. Enter before Ray starts."""
    import ray

    show_log_path()  # past the input checks: the run's log is worth knowing from here on
    guard = RunGuard(uuid.uuid4().hex)
    os.environ[RUN_ID_ENV] = guard.run_id
    watchdog = subprocess.Popen(
        [sys.executable, "-m", __name__, str(os.getpid()), guard.run_id],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True,
    )
    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, guard._on_sigterm)
        yield guard
    except KeyboardInterrupt:
        signum = guard.signum or signal.SIGINT
        logger.info("%s: stopping the run", signal.Signals(signum).name)
        raise SystemExit(128 + signum) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        # The watchdog sweeps what Ray left behind, then exits; it starts when Ray's shutdown returns, or
        # after SHUTDOWN_S if the shutdown waits on a process of the run that does not answer (the
        # sweep stops that process too, and so ends the wait).
        sweep = threading.Timer(SHUTDOWN_S, watchdog.stdin.close)
        sweep.start()
        try:
            ray.shutdown()
        finally:
            sweep.cancel()
            sweep.join()  # a close in progress ends before ours (a no-op then)
            watchdog.stdin.close()
        try:
            watchdog.wait(timeout=WATCHDOG_WAIT_S)
        except subprocess.TimeoutExpired:
            logger.warning("run %s: the watchdog (pid %d) is still stopping processes", guard.run_id[:8], watchdog.pid)


if __name__ == "__main__":
    configure_logging()
    watch(int(sys.argv[1]), sys.argv[2])
