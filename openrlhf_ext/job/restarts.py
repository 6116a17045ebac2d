"""``--ext.max_restarts N``: a run that loses an actor starts its actors again and resumes, at most N times.

A fault of an actor (a generator, the reference model, a policy rank dies: killed, out of memory,
its node gone) or of the reward (:class:`~openrlhf_ext.reporting.failures.RewardUnavailable`) is one a
new attempt can get past; any other error (a bug, a bad input, a run that trains 0 steps) would only
happen again and ends the run at once. For a restart the driver leaves the failed attempt's guarded
run (:mod:`~openrlhf_ext.job.run_guard`: Ray shut down, every process of the attempt stopped),
points ``latest`` at the newest intact checkpoint (:func:`~openrlhf_ext.trainer.checkpoints.resolve_resume`),
and runs OpenRLHF's driver again with ``--ckpt.load_enable``.

A reward server is not ours to restart (the project never starts one: a supervisor or the user does), and
an attempt restarted while it is down would fail at its first rollout. So after a missing reward the
restart first waits, backing off, until every ``--reward.remote_url`` server accepts connections again,
at most ``$OPENRLHF_EXT_REWARD_WAIT_S`` seconds (default 600), and says so; a server still down then
ends the run with one line naming its URL.

``metrics.jsonl`` keeps every step once: before each attempt, the records of the steps after the
one it starts from are dropped (the attempt trains them again). The trainer writes a step's record
before that step's checkpoint, so a checkpoint of step N always has the records up to N.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

from openrlhf_ext.job.checks import InputError
from openrlhf_ext.reporting.curves import METRICS_FILE
from openrlhf_ext.reporting.failures import RewardUnavailable, RunFailure, reward_connect_error
from openrlhf_ext.trainer.checkpoints import LATEST, resolve_resume, resume_step

# A transient fault (a worker killed for memory, a reward server restarting) is survived twice; a fault
# that keeps coming back ends the run after three attempts instead of looping.
DEFAULT_MAX_RESTARTS = 2
_MAX_CHAIN = 32  # links of an error chain looked at (a chain is never this long; a cycle stops here)
REWARD_WAIT_ENV = "OPENRLHF_EXT_REWARD_WAIT_S"
# A supervisor (systemd, Kubernetes) brings a server back in seconds, a person paged in minutes.
DEFAULT_REWARD_WAIT_S = 600.0
_REWARD_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 15.0, 30.0)  # then every 30 s

logger = logging.getLogger(__name__)


def _chain(err: BaseException | None) -> Iterator[BaseException]:
    """The links of a Ray failure chain, outermost first."""
    from ray.exceptions import RayTaskError

    for _ in range(_MAX_CHAIN):
        if err is None:
            return
        yield err
        err = err.cause if isinstance(err, RayTaskError) else err.__cause__


def is_actor_fault(err: BaseException | None) -> bool:
    """Whether a Ray failure chain holds the death of an actor, its worker or node, or a missing reward."""
    from ray.exceptions import (
        NodeDiedError,
        ObjectLostError,
        OutOfMemoryError,
        RayActorError,
        WorkerCrashedError,
    )

    faults = (RayActorError, WorkerCrashedError, NodeDiedError, ObjectLostError, OutOfMemoryError, RewardUnavailable)
    # A RayTaskError is also an instance of its cause's class.
    return any(isinstance(link, faults) for link in _chain(err))


def reward_wait_s() -> float:
    """``$OPENRLHF_EXT_REWARD_WAIT_S``: how long a restart waits for a reward server to come back."""
    text = os.environ.get(REWARD_WAIT_ENV, "").strip()
    try:
        wait_s = float(text) if text else DEFAULT_REWARD_WAIT_S
    except ValueError:
        wait_s = math.nan
    if not (math.isfinite(wait_s) and wait_s >= 0):
        raise InputError(f"${REWARD_WAIT_ENV}: must be a number of seconds >= 0, got {text!r}")
    return wait_s


def wait_for_reward_servers(urls: list[str], wait_s: float, failure: RunFailure) -> None:
    """Return once every HTTP reward server of ``urls`` accepts connections, checking with a growing
    backoff; after ``wait_s`` seconds raise a :class:`RunFailure` (caused by ``failure``) naming one still down."""
    deadline = time.monotonic() + wait_s
    waited = False
    for delay in itertools.chain(_REWARD_BACKOFF_S, itertools.repeat(_REWARD_BACKOFF_S[-1])):
        down = {url: error for url in urls if (error := reward_connect_error(url)) is not None}
        if not down:
            if waited:
                logger.info("the reward server is back: %s", ", ".join(urls))
            return
        url, error = next(iter(down.items()))
        left = deadline - time.monotonic()
        if left <= 0:
            raise RunFailure(f"the reward server {url} did not come back within {wait_s:.0f} s ({error}); "
                             f"start it and resume the run with --ckpt.load_enable") from failure
        if not waited:
            logger.info("the reward server %s does not accept connections (%s): waiting up to %.0f s for it "
                        "($%s)", url, error, wait_s, REWARD_WAIT_ENV)
            waited = True
        time.sleep(min(delay, left))


def drop_redone_steps(args: SimpleNamespace) -> None:
    """Drop from ``metrics.jsonl`` the records of steps after the one the run starts from (and a
    line cut off by a kill), so that each step the run trains is there once."""
    path = Path(args.ckpt.output_dir) / METRICS_FILE
    if not path.is_file():
        return
    last = resume_step(args)
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if record.get("step", 0) <= last:
            kept.append(line + "\n")
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    os.replace(tmp, path)


def _saved_since(args: SimpleNamespace, since: float) -> bool:
    """Whether this run has committed a checkpoint (``latest`` switched) since ``since``."""
    latest = Path(args.ckpt.path) / "_actor" / LATEST
    return latest.is_file() and latest.stat().st_mtime >= since


def run_with_restarts(args: SimpleNamespace, attempt: Callable[[], None]) -> None:
    """Run ``attempt`` (one guarded run of OpenRLHF's driver, raising :class:`RunFailure`) until it
    succeeds, restarting it after an actor fault at most ``--ext.max_restarts`` times."""
    limit = args.ext.max_restarts
    if limit == 0 and args.ckpt.save_steps <= 0:
        logger.info("restarts off: the run saves no checkpoint to restart from (--ckpt.save_steps -1); "
                    "--ckpt.save_steps K turns them on (--ext.max_restarts)")
    wait_s = reward_wait_s()
    started = time.time()
    resumed = args.ckpt.load_enable
    drop_redone_steps(args)
    for restart in range(1, limit + 2):
        try:
            attempt()
            return
        except RunFailure as failure:
            if restart > limit or not is_actor_fault(failure.__cause__):
                raise
            logger.info("restart %d/%d after %s", restart, limit, failure)
            if any(isinstance(link, RewardUnavailable) for link in _chain(failure.__cause__)):
                wait_for_reward_servers(args.reward.remote_url, wait_s, failure)
        # A run that did not resume restarts from its own checkpoints only, not from older ones in the folder.
        args.ckpt.load_enable = resumed or _saved_since(args, started)
        resolve_resume(args)
        drop_redone_steps(args)
        logger.info("restart %d/%d: resuming after step %s", restart, limit, resume_step(args))
