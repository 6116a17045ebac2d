"""The terminal of a training run: one line per step under a progress bar, the rest in a log file.

A run's output comes from many processes: this driver, and every Ray actor (vLLM engines,
DeepSpeed ranks, the trainer), whose output Ray forwards to the driver's stdout / stderr. All of it
(model reprs, argument namespaces, stock per-step dicts, library warnings) goes to
``<ckpt.output_dir>/train.log`` by pointing this process's file descriptors 1 and 2 at the file, so
that the subprocesses Ray starts inherit it too. A thread follows the file and puts on the terminal
only the trainer's step lines (``[step N/TOTAL] ...``, see :func:`format_step_line`) under a
progress bar with the ETA of the whole run, and our own ``[openrlhf_ext...]`` messages. With
``--ext.verbose`` nothing is redirected: the terminal gets everything, as stock.
"""

from __future__ import annotations

import contextlib
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


@contextlib.contextmanager
def run_console(output_dir: str, verbose: bool = False) -> Iterator[Path | None]:
    """Everything written to this process's stdout / stderr (and its children's) goes to the log
    file; the terminal shows the step lines. Yields the log file's path (None when ``verbose``)."""
    if verbose:
        yield None
        return
    log_path = Path(output_dir).resolve() / LOG_FILE
    log_path.parent.mkdir(parents=True, exist_ok=True)
    created = not log_path.exists()
    _flush_std()
    saved_out, saved_err = os.dup(1), os.dup(2)
    terminal = os.fdopen(os.dup(1), "w", buffering=1)
    print(f"[openrlhf_ext] log: {log_path}", file=terminal)
    with open(log_path, "ab") as log:
        offset = log.tell()
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    follower = StepFollower(log_path, offset, terminal)
    follower.start()
    failed = True
    try:
        yield log_path
        failed = False
    finally:
        _flush_std()
        follower.done.set()
        follower.join(timeout=10)
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        if created and log_path.stat().st_size == 0:
            # Stopped before anything ran (bad input: its one-line error follows); leave no file.
            log_path.unlink()
        else:
            tail = _tail(log_path, offset, FAILURE_TAIL_LINES) if failed else ""
            if tail:
                print(f"[openrlhf_ext] the run failed; the last lines of the log:\n{tail}", file=terminal)
            print(f"[openrlhf_ext] log: {log_path}", file=terminal)
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
