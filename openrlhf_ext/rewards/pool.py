"""A pool of scoring worker processes with a hard per-call deadline enforced by the parent (SPEC §4).

Why processes, and why the parent enforces the limit: math-verify's own timeouts use SIGALRM, which
only works on the main thread (OpenRLHF calls a reward file from ``asyncio.to_thread`` inside a Ray
actor, an HTTP server answers from threads) and which cannot interrupt sympy while it is inside one C
call (``10^{10^{10^{10}}}`` never returns). Here the calling thread waits on the worker's pipe with a
deadline; when it passes, the worker is SIGKILLed, the response is scored wrong, counted and logged
with a short excerpt, and a fresh worker replaces it.

Design:

* workers are plain subprocesses (``python -m openrlhf_ext.rewards.worker_main``), so nothing depends on
  the parent's ``__main__``, start method or threads; they stay alive across calls;
* ``workers`` calls run at once (a semaphore); ``workers + spare`` processes are kept, so a killed
  worker's slot is refilled by an already-started spare while its replacement boots (~0.5 s);
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
import pickle
import select
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

from openrlhf_ext.rewards._ipc import HEADER, encode_frame
from openrlhf_ext.rewards.verdict import Verdict

logger = logging.getLogger(__name__)

_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])
_MAX_START_FAILURES = 3
_MAX_DEAD_BEFORE_REQUEST = 8
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
    def __init__(self, memory_mb: int) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "openrlhf_ext.rewards.worker_main", "--memory-mb", str(memory_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
            # Own session: a Ctrl-C meant for the trainer must not hit the workers mid-request.
            start_new_session=True,
        )
        self.ready = False
        self._poller = select.poll()  # poll, not select: Ray actors can hold fds above FD_SETSIZE
        self._poller.register(self.proc.stdout.fileno(), select.POLLIN)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read_exact(self, n: int, deadline: float) -> bytes:
        fd = self.proc.stdout.fileno()
        buf = bytearray()
        while len(buf) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._poller.poll(remaining * 1000.0):
                raise _Deadline
            chunk = os.read(fd, n - len(buf))
            if not chunk:
                raise _WorkerGone
            buf += chunk
        return bytes(buf)

    def _read_frame(self, deadline: float) -> Any:
        (size,) = HEADER.unpack(self._read_exact(HEADER.size, deadline))
        return pickle.loads(self._read_exact(size, deadline))

    def wait_ready(self, timeout_s: float) -> None:
        if not self.ready:
            self._read_frame(time.monotonic() + timeout_s)
            self.ready = True

    def poll_ready(self) -> bool:
        """Ready without waiting (reads the ready frame if it has arrived)."""
        if self.proc.poll() is not None:
            raise _WorkerGone
        if not self.ready and self._poller.poll(0):
            self.wait_ready(5.0)  # the frame is tiny and written at once: it is all there
        return self.ready

    def send(self, payload: dict) -> None:
        try:
            self.proc.stdin.write(encode_frame(payload))
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise _WorkerGone from exc

    def receive(self, deadline: float) -> dict:
        return self._read_frame(deadline)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
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
        self._idle: deque[_Worker] = deque(self._spawn() for _ in range(workers + spare))
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reward-pool")

    # -- worker lifecycle -------------------------------------------------------------------------
    def _spawn(self) -> _Worker:
        worker = _Worker(self.memory_mb)
        self._all.add(worker)
        return worker

    def _discard(self, worker: _Worker, restart: bool = True) -> None:
        worker.kill()
        with self._lock:
            self._all.discard(worker)
            if restart and not self._closed:
                self._idle.append(self._spawn())
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
    def judge(self, response: str, label: str, template: str | None, fallback: bool, timeout_s: float) -> Outcome:
        """Judge one response in a worker; never takes longer than ``timeout_s`` once a worker has it."""
        payload = {
            "response": response,
            "label": label,
            "template": template,
            "fallback": fallback,
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
        self, responses: Sequence[str], labels: Sequence[str], template: str | None, fallback: bool, timeout_s: float
    ) -> list[Outcome]:
        """Judge a batch on all workers at once; results in input order."""
        if len(responses) != len(labels):
            raise ValueError(f"{len(responses)} responses but {len(labels)} labels")
        futures = [
            self._executor.submit(self.judge, r, lab, template, fallback, timeout_s)
            for r, lab in zip(responses, labels, strict=True)
        ]
        return [f.result() for f in futures]

    def worker_pids(self) -> list[int]:
        """Pids of all live worker processes (idle, busy and spare)."""
        with self._lock:
            return [w.pid for w in self._all if w.proc.poll() is None]

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
