"""A pool of scoring worker processes with a hard per-call deadline enforced by the parent (docs/rewards.md).

Why processes, and why the parent enforces the limit: math-verify's own timeouts use SIGALRM, which
only works on the main thread of the main interpreter (OpenRLHF calls a reward file from
``asyncio.to_thread`` inside a Ray actor, an HTTP server answers from threads: math-verify then raises
unless its timeouts are off, and without them ``\\boxed{10^{10^{10^{10}}}}`` runs for more than 10 s);
and a Python signal handler only runs between bytecodes, so no in-process timer can stop one long
C-level call. Here the calling thread waits on the worker's pipe with a deadline; when it passes, the
worker is SIGKILLed, the response is scored wrong, counted and logged with a short excerpt, and a
fresh worker replaces it.

Design:

* workers are forked from a warm template process, itself a plain subprocess
  (``python -m openrlhf_ext.rewards.worker_main``), so nothing depends on the parent's ``__main__``,
  multiprocessing start method or threads, and a replacement costs milliseconds, not an interpreter
  start with a math-verify import; workers stay alive across calls;
* ``workers`` calls run at once (a semaphore); ``workers + spare`` processes are kept, so a killed
  worker's slot is refilled at once;
* the deadline covers only the time the request spends on a worker, never the wait for a free one;
* a worker that dies mid-request (killed from outside, crashed) is replaced and the request is retried
  once on another worker; a second death scores it wrong with error ``crash``. A worker found dead
  before it gets a request is just replaced;
* thread-safe: any number of threads may call :meth:`ScoringPool.judge` concurrently.
"""

from __future__ import annotations

import atexit
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from openrlhf_ext.rewards._ipc import PID, READY, SPAWN, encode_frame, read_frame
from openrlhf_ext.rewards.verdict import Verdict

logger = logging.getLogger(__name__)

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_MAX_START_FAILURES = 3
_MAX_DEAD_BEFORE_REQUEST = 8
_EXIT_WAIT_MS = 2000
_EXCERPT_CHARS = 60


class WorkerStartError(RuntimeError):
    """Scoring workers cannot be started (an environment problem, not a model output)."""


class _WorkerGone(Exception):
    """The worker process closed its pipe (it died or was killed)."""


class _Deadline(Exception):
    """The worker did not answer before the deadline."""


@dataclass(frozen=True)
class Outcome:
    """A verdict plus what the pool observed: wall time on the worker and whether it was killed."""

    verdict: Verdict
    latency_s: float
    timed_out: bool


@dataclass
class PoolCounters:
    """Cumulative counts since the pool started (monotonic, for logs and tests)."""

    calls: int = 0
    timeouts: int = 0
    crashes: int = 0
    restarts: int = 0
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, **deltas: int) -> None:
        with self.lock:
            for name, delta in deltas.items():
                setattr(self, name, getattr(self, name) + delta)

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return {k: getattr(self, k) for k in ("calls", "timeouts", "crashes", "restarts", "errors")}


def excerpt(text: str, chars: int = _EXCERPT_CHARS) -> str:
    """Short, printable excerpt of a (possibly huge) response for logs: head ... tail, repr-escaped."""
    if len(text) <= 2 * chars:
        return repr(text)
    return f"{text[:chars]!r} ... {text[-chars:]!r} ({len(text)} chars)"


class _Worker:
    """Parent's handle on one forked worker: its pid and our ends of its two pipes."""

    def __init__(self, pid: int, to_fd: int, from_fd: int) -> None:
        self.pid = pid
        self._to = os.fdopen(to_fd, "wb")
        self._from_fd = from_fd
        self.ready = False
        self._poller = select.poll()  # poll, not select: Ray actors can hold fds above FD_SETSIZE
        self._poller.register(from_fd, select.POLLIN)
        self._killed = False

    def _read_exact(self, n: int, deadline: float) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._poller.poll(remaining * 1000.0):
                raise _Deadline
            chunk = os.read(self._from_fd, n - len(buf))
            if not chunk:
                raise _WorkerGone
            buf += chunk
        return bytes(buf)

    def _read_frame(self, deadline: float) -> Any:
        return read_frame(lambda n: self._read_exact(n, deadline))

    def wait_ready(self, timeout_s: float) -> None:
        if not self.ready:
            self._read_frame(time.monotonic() + timeout_s)
            self.ready = True

    def poll_ready(self) -> bool:
        """Ready without waiting; raises :class:`_WorkerGone` for a worker that has died.

        An idle worker writes nothing, so any event on its pipe is either the ready frame (tiny,
        written at once) or the hang-up of a dead process.
        """
        if self._poller.poll(0):
            if self.ready:
                raise _WorkerGone
            self.wait_ready(5.0)
        return self.ready

    def _hung_up(self, timeout_ms: float) -> bool:
        # A poll object of its own: another thread may be waiting on ``_poller`` for a reply. The
        # hang-up comes when the process has exited (its pipe ends close with it).
        probe = select.poll()
        probe.register(self._from_fd, 0)  # hang-up and error are always reported
        return bool(probe.poll(timeout_ms))

    def alive(self) -> bool:
        return not self._killed and not self._hung_up(0)

    def send(self, payload: dict) -> None:
        try:
            self._to.write(encode_frame(payload))
            self._to.flush()
        except (BrokenPipeError, OSError) as exc:
            raise _WorkerGone from exc

    def receive(self, deadline: float) -> dict:
        return self._read_frame(deadline)

    def kill(self) -> None:
        """SIGKILL the worker (unless its pipe already says it is gone) and close our pipe ends."""
        if self.alive():
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._hung_up(_EXIT_WAIT_MS)  # so that a closed pool leaves no worker behind
        self._killed = True
        for close in (self._to.close, lambda: os.close(self._from_fd)):
            try:
                close()
            except OSError:
                pass


class _Zygote:
    """The warm template process that forks workers (see :mod:`openrlhf_ext.rewards.worker_main`)."""

    def __init__(self, memory_mb: int) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        command = [sys.executable, "-m", "openrlhf_ext.rewards.worker_main"]
        command += ["--control-fd", str(theirs.fileno()), "--memory-mb", str(memory_mb)]
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            env=env,
            pass_fds=(theirs.fileno(),),
            # Own session: a Ctrl-C meant for the trainer must not hit the workers mid-request.
            start_new_session=True,
        )
        theirs.close()
        self._sock = ours
        self._ready = False
        self._lock = threading.Lock()

    def _recv_exact(self, n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = self._sock.recv(n - len(buf))
            if not chunk:
                raise _WorkerGone
            buf += chunk
        return buf

    def spawn(self, start_timeout_s: float) -> _Worker:
        """Fork a new worker; the first call waits (up to ``start_timeout_s``) for the zygote to warm up."""
        with self._lock:
            try:
                self._sock.settimeout(start_timeout_s)
                if not self._ready:
                    if self._recv_exact(len(READY)) != READY:
                        raise _WorkerGone
                    self._ready = True
            except OSError as exc:  # socket.timeout is an OSError
                raise _WorkerGone from exc
            to_child_r, to_child_w = os.pipe()
            from_child_r, from_child_w = os.pipe()
            try:
                socket.send_fds(self._sock, [SPAWN], [to_child_r, from_child_w])
                (pid,) = PID.unpack(self._recv_exact(PID.size))
            except (OSError, _WorkerGone) as exc:
                os.close(to_child_w)
                os.close(from_child_r)
                raise _WorkerGone from exc
            finally:
                # The worker holds the only other copies: its death is then an EOF on our end.
                os.close(to_child_r)
                os.close(from_child_w)
        return _Worker(pid, to_child_w, from_child_r)

    def close(self) -> None:
        self._sock.close()  # the zygote sees EOF and exits
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


class ScoringPool:
    """Scoring worker processes with a hard per-call wall-clock limit (see module docstring).

    Args:
        workers: number of calls that run at once.
        spare: extra started processes that take over at once when a worker is killed.
        start_timeout_s: how long a new worker may take to import math-verify and say it is ready.
        memory_mb: address-space limit of each worker (0: none).
    """

    def __init__(self, workers: int = 2, spare: int = 1, start_timeout_s: float = 60.0, memory_mb: int = 4096):
        if workers < 1 or spare < 0:
            raise ValueError(f"need workers >= 1 and spare >= 0, got {workers}, {spare}")
        self.workers = workers
        self.start_timeout_s = start_timeout_s
        self.memory_mb = memory_mb
        self.counters = PoolCounters()
        self._slots = threading.BoundedSemaphore(workers)
        self._lock = threading.Lock()
        self._closed = False
        self._start_failures = 0
        self._all: set[_Worker] = set()
        self._zygote = _Zygote(memory_mb)
        self._idle: deque[_Worker] = deque(self._spawn() for _ in range(workers + spare))
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reward-pool")

    # -- worker lifecycle -------------------------------------------------------------------------
    def _spawn(self) -> _Worker:
        """Fork a worker from the zygote; a dead zygote is replaced once, then the failure is raised."""
        for attempt in range(2):
            zygote = self._zygote
            try:
                worker = zygote.spawn(self.start_timeout_s)
            except _WorkerGone:
                if attempt == 1:
                    raise WorkerStartError(
                        f"the scoring worker template process did not start within {self.start_timeout_s}s "
                        "(see its stderr above)"
                    ) from None
                with self._lock:
                    if self._closed:
                        raise RuntimeError("ScoringPool is closed") from None
                    if self._zygote is zygote:
                        zygote.close()
                        self._zygote = _Zygote(self.memory_mb)
                continue
            with self._lock:
                self._all.add(worker)
            return worker
        raise AssertionError("unreachable")

    def _discard(self, worker: _Worker) -> None:
        """Kill ``worker`` and queue a fresh one in its place."""
        worker.kill()
        with self._lock:
            self._all.discard(worker)
            if self._closed:
                return
        replacement = self._spawn()
        with self._lock:
            if self._closed:
                replacement.kill()
                self._all.discard(replacement)
                return
            self._idle.append(replacement)
        self.counters.add(restarts=1)

    def _checkout(self) -> _Worker:
        while True:
            dead: list[_Worker] = []
            with self._lock:
                if self._closed:
                    raise RuntimeError("ScoringPool is closed")
                worker = None
                for candidate in self._idle:
                    try:
                        if candidate.poll_ready():
                            worker = candidate
                            break
                    except (_WorkerGone, _Deadline):
                        dead.append(candidate)
                for candidate in dead:
                    self._idle.remove(candidate)
                if worker is None and self._idle:
                    worker = self._idle[0]
                if worker is not None:
                    self._idle.remove(worker)
            for candidate in dead:
                self._discard(candidate)
            if worker is None:
                continue  # only dead workers were idle; their replacements are now queued
            try:
                worker.wait_ready(self.start_timeout_s)
            except (_WorkerGone, _Deadline):
                self._discard(worker)
                with self._lock:
                    self._start_failures += 1
                    failures = self._start_failures
                if failures >= _MAX_START_FAILURES:
                    raise WorkerStartError(
                        f"{failures} scoring workers in a row did not start within {self.start_timeout_s}s "
                        "(see their stderr above)"
                    ) from None
                continue
            with self._lock:
                self._start_failures = 0
            return worker

    def _checkin(self, worker: _Worker) -> None:
        with self._lock:
            if self._closed:
                worker.kill()
                self._all.discard(worker)
            else:
                self._idle.appendleft(worker)

    # -- scoring ----------------------------------------------------------------------------------
    def judge(
        self, response: str, label: str, template: str | None, fallback: bool, timeout_s: float, strict: bool = False
    ) -> Outcome:
        """Judge one response in a worker; never takes longer than ``timeout_s`` once a worker has it."""
        payload = {
            "response": response,
            "label": label,
            "template": template,
            "fallback": fallback,
            "strict": strict,
            "cpu_s": 2.0 * timeout_s + 5.0,
        }
        self.counters.add(calls=1)
        first_start = time.monotonic()
        crashes = dead_before = 0
        with self._slots:
            # A worker found dead before it got the request (killed while idle) is not the response's
            # fault and costs nothing but a replacement; one that dies with the request gets a retry.
            while crashes < 2 and dead_before < _MAX_DEAD_BEFORE_REQUEST:
                worker = self._checkout()
                start = time.monotonic()
                try:
                    worker.send(payload)
                except _WorkerGone:
                    self._discard(worker)
                    dead_before += 1
                    continue
                try:
                    reply = worker.receive(start + timeout_s)
                except _Deadline:
                    latency = time.monotonic() - start
                    self._discard(worker)
                    self.counters.add(timeouts=1)
                    logger.warning(
                        "reward: scoring exceeded %.1fs, worker %d killed and replaced; response scored wrong: %s",
                        timeout_s,
                        worker.pid,
                        excerpt(response),
                    )
                    return Outcome(Verdict(False, False, "none", None, "timeout"), latency, True)
                except _WorkerGone:
                    self._discard(worker)
                    self.counters.add(crashes=1)
                    crashes += 1
                    logger.warning("reward: worker %d died mid-request (attempt %d)", worker.pid, crashes)
                    continue
                latency = time.monotonic() - start
                if reply.pop("recycle", False):
                    self._discard(worker)
                else:
                    self._checkin(worker)
                verdict = Verdict(**reply)
                if verdict.error:
                    self.counters.add(errors=1)
                    logger.info("reward: %s on response %s", verdict.error, excerpt(response))
                return Outcome(verdict, latency, False)
        self.counters.add(errors=1)
        logger.warning("reward: workers kept dying on response %s; scored wrong", excerpt(response))
        return Outcome(Verdict(False, False, "none", None, "crash"), time.monotonic() - first_start, False)

    def judge_many(
        self,
        responses: Sequence[str],
        labels: Sequence[str],
        template: str | None,
        fallback: bool,
        timeout_s: float,
        strict: bool = False,
    ) -> list[Outcome]:
        """Judge a batch on all workers at once; results in input order."""
        if len(responses) != len(labels):
            raise ValueError(f"{len(responses)} responses but {len(labels)} labels")
        futures = [
            self._executor.submit(self.judge, r, lab, template, fallback, timeout_s, strict)
            for r, lab in zip(responses, labels, strict=True)
        ]
        return [f.result() for f in futures]

    def worker_pids(self) -> list[int]:
        """Pids of all live worker processes (idle, busy and spare)."""
        with self._lock:
            return [w.pid for w in self._all if w.alive()]

    def busy_pids(self) -> list[int]:
        """Pids of the workers judging a response right now."""
        with self._lock:
            return [w.pid for w in self._all if w not in self._idle and w.alive()]

    def close(self) -> None:
        """Kill every worker; later calls raise. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers = list(self._all)
            self._all.clear()
            self._idle.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)
        for worker in workers:
            worker.kill()
        self._zygote.close()

    def __enter__(self) -> ScoringPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_shared: dict[int, tuple[int, ScoringPool]] = {}
_shared_lock = threading.Lock()


def shared_pool(workers: int) -> ScoringPool:
    """The process-wide pool with ``workers`` workers, created on first use and closed at exit.

    A forked child does not reuse its parent's pool (the pipes belong to the parent).
    """
    with _shared_lock:
        entry = _shared.get(workers)
        if entry is None or entry[0] != os.getpid():
            pool = ScoringPool(workers=workers)
            _shared[workers] = (os.getpid(), pool)
            return pool
        return entry[1]


@atexit.register
def _close_shared_pools() -> None:
    with _shared_lock:
        for pid, pool in _shared.values():
            if pid == os.getpid():
                pool.close()
        _shared.clear()
