"""The terminal of a training run: one line per step under a progress bar, the rest in a log file.

A run's output comes from many processes: this driver, and every Ray actor (vLLM engines,
DeepSpeed ranks, the trainer), whose output Ray forwards to the driver's stdout / stderr. All of it
(model reprs, argument namespaces, stock per-step dicts, library warnings) goes to
``<ckpt.output_dir>/train.log`` by pointing this process's file descriptors 1 and 2 at the file, so
that the subprocesses Ray starts inherit it too. A thread follows the file and puts on the terminal
only the trainer's step lines (``[step N/TOTAL] ...``, see :func:`format_step_line`) under a
progress bar with the ETA of the whole run, and our own ``[openrlhf_ext...]`` messages. The same
lines reach the terminal whatever stdout is (a terminal, a pipe, a file under ``nohup`` or a Ray job):
the redirection is of file descriptors, so it holds for every process; only the progress bar is
left out where stdout is not a terminal. With ``--ext.verbose`` nothing is redirected: the terminal
gets everything, as stock.

The log's path is put on the terminal once the run gets past its input checks
(:func:`show_log_path`, called as Ray starts) and again at the end. A run refused for its input
(one of ``input_errors``, before Ray) shows only its error line: its log holds nothing but the
import-time chatter of libraries and our own lines, already on the terminal, so it is dropped.

Our own messages go through :mod:`logging` (``logging.getLogger(__name__)`` in every module);
:func:`configure_logging`, run by every command, decides once where they go and how they look.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from tqdm import tqdm

LOG_FILE = "train.log"
# Ray prefixes forwarded lines with "(ActorName pid=..., ip=...) "; the match starts after it.
STEP_LINE = re.compile(r"\[step (\d+)/(\d+)\] .*")
OWN_LINE = re.compile(r"^\[openrlhf_ext[^\]]*\] ")
FAILURE_TAIL_LINES = 20
FOLLOW_POLL_S = 0.5
PREFIX = "[openrlhf_ext] "


class _OwnFormat(logging.Formatter):
    """``[openrlhf_ext] message``, ``[openrlhf_ext] warning: message`` from WARNING on: the prefix
    by which the console tells our lines from the rest of the log (:data:`OWN_LINE`)."""

    def format(self, record: logging.LogRecord) -> str:
        level = f"{record.levelname.lower()}: " if record.levelno >= logging.WARNING else ""
        return f"{PREFIX}{level}{super().format(record)}"


class _CurrentStderr(logging.StreamHandler):
    """Writes to ``sys.stderr`` as it is at each record, not as it was when configured (as
    :data:`logging.lastResort` does): pytest's capture and ``contextlib.redirect_stderr`` replace
    the object. Run output reaches train.log through fd 2 all the same (:func:`run_console`)."""

    @property
    def stream(self) -> IO[str]:  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value: IO[str]) -> None:  # StreamHandler.__init__ assigns it
        pass


def configure_logging() -> None:
    """The one configuration of the ``openrlhf_ext`` loggers: INFO and up, to stderr, prefixed.
    Idempotent. Records still propagate to the root logger, where nothing of ours listens (so no
    line twice) but pytest's ``caplog`` does."""
    package = logging.getLogger("openrlhf_ext")
    package.setLevel(logging.INFO)
    if not any(isinstance(h, _CurrentStderr) for h in package.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(_OwnFormat())
        package.addHandler(handler)


def format_step_line(step: int, total: int, status: dict) -> str:
    """The one line a person reads per step: reward, correct and kept fractions, KL, entropy, and
    the step time with its split (generation, experience making, training, weight sync)."""

    def get(key: str, fmt: str) -> str:
        value = status.get(key)
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            return "-"
        return format(float(value), fmt)

    return (
        f"[step {step}/{total}] reward {get('ext/reward_mean', '.3f')} | correct {get('ext/correct_fraction', '.2f')}"
        f" | kept {get('ext/kept_fraction', '.2f')} | kl {get('kl', '.4f')} | entropy {get('entropy_loss', '.3f')}"
        f" | {get('timing/step_total', '.1f')}s (gen {get('timing/generation', '.1f')}"
        f" / exp {get('timing/make_experience', '.1f')} / train {get('timing/ppo_train', '.1f')}"
        f" / sync {get('timing/broadcast', '.1f')})"
    )


class StepFollower(threading.Thread):
    """Reads the log file from ``offset`` as it grows and writes the lines meant for a person."""

    def __init__(self, path: Path, offset: int, terminal: IO[str]) -> None:
        super().__init__(name="openrlhf-ext-console", daemon=True)
        self.path, self.offset, self.terminal = path, offset, terminal
        self.done = threading.Event()
        # On a terminal the bar stays under the step lines; elsewhere (a Ray job log, a Slurm
        # output file) it would only add carriage returns, and the lines carry the ETA instead.
        self.bar = tqdm(total=None, unit="step", file=terminal, dynamic_ncols=True, disable=not terminal.isatty(),
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} steps [{elapsed}<{remaining}]")
        self.first: tuple[int, float] | None = None
        self.log_path_shown = False

    def show_log_path(self) -> None:
        if not self.log_path_shown:
            self.log_path_shown = True
            self.bar.write(f"{PREFIX}log: {self.path}", file=self.terminal)

    def run(self) -> None:
        with open(self.path, "rb") as log:
            log.seek(self.offset)
            pending = b""
            while True:
                finishing = self.done.is_set()  # read once more after the last write
                chunk = log.read()
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    self.show(line.decode("utf-8", "replace").rstrip("\r"))
                if finishing:
                    break
                if not chunk:
                    self.done.wait(FOLLOW_POLL_S)
        self.bar.close()

    def show(self, line: str) -> None:
        match = STEP_LINE.search(line)
        if match:
            step, total = int(match.group(1)), int(match.group(2))
            self.bar.total = max(total, step)
            self.bar.n = step
            self.bar.refresh()
            self.bar.write(f"{match.group(0)} | eta {self.eta(step, total)}", file=self.terminal)
        elif OWN_LINE.match(line):
            self.bar.write(line, file=self.terminal)

    def eta(self, step: int, total: int) -> str:
        """Time left at the mean pace since the first step seen (start-up time not counted)."""
        now = time.monotonic()
        if self.first is None or step <= self.first[0]:
            self.first = self.first or (step, now)
            return "?"
        pace = (now - self.first[1]) / (step - self.first[0])
        return tqdm.format_interval(pace * max(total - step, 0))


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


# The console of the run in progress in this process, for show_log_path (None outside a run).
_follower: StepFollower | None = None


def show_log_path() -> None:
    """Put the log's path on the terminal (once): the run got past its input checks. Called by
    :func:`openrlhf_ext.job.run_guard.guarded_run` as Ray starts; nothing outside a console."""
    if _follower is not None:
        _follower.show_log_path()


@contextlib.contextmanager
def run_console(output_dir: str, verbose: bool = False,
                input_errors: tuple[type[BaseException], ...] = ()) -> Iterator[Path | None]:
    """Everything written to this process's stdout / stderr (and its children's) goes to the log
    file; the terminal shows the step lines. Yields the log file's path (None when ``verbose``).
    One of ``input_errors`` raised before :func:`show_log_path` leaves the terminal and the log
    as they were before the run (the caller prints the error)."""
    global _follower
    if verbose:
        yield None
        return
    log_path = Path(output_dir).resolve() / LOG_FILE
    created_dir = not log_path.parent.exists()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    created = not log_path.exists()
    _flush_std()
    saved_out, saved_err = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(1), "w", buffering=1)
    with open(log_path, "ab") as log:
        offset = log.tell()
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    follower = _follower = StepFollower(log_path, offset, terminal)
    follower.start()
    outcome = "failed"
    try:
        yield log_path
        outcome = "done"
    except input_errors:
        if not follower.log_path_shown:
            outcome = "refused"
        raise
    finally:
        _flush_std()
        follower.done.set()
        follower.join(timeout=10)
        _follower = None
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        if outcome == "refused" or (created and log_path.stat().st_size == 0):
            # Refused for its input, or stopped before anything ran: no trace in the log.
            if created:
                log_path.unlink()
            else:
                os.truncate(log_path, offset)
            if outcome == "refused" and created_dir:
                with contextlib.suppress(OSError):  # kept if the run wrote something else there
                    log_path.parent.rmdir()
        else:
            tail = _tail(log_path, offset, FAILURE_TAIL_LINES) if outcome == "failed" else ""
            if tail:
                print(f"{PREFIX}the run failed; the last lines of the log:\n{tail}", file=terminal)
            print(f"{PREFIX}log: {log_path}", file=terminal)
        terminal.close()


def show_report(output_dir: str) -> None:
    """The end-of-run summary table and curves (written by ``launch``, whose printout of them went
    to the log file with the rest)."""
    summary, curves = Path(output_dir) / "summary.md", Path(output_dir) / "curves.png"
    if summary.exists():
        print(f"\n{summary.read_text().rstrip()}\n\nsummary: {summary.resolve()}")
    if curves.exists():
        print(f"curves: {curves.resolve()}", flush=True)


def _tail(path: Path, offset: int, lines: int) -> str:
    """The last ``lines`` lines written after ``offset``."""
    with open(path, "rb") as log:
        log.seek(offset)
        last = deque(log, maxlen=lines)
    return b"".join(last).decode("utf-8", "replace").rstrip("\n")
