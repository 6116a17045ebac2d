"""``--ext.max_restarts N``: a run that loses an actor starts its actors again and resumes, at most N times.

A fault of an actor (a generator, the reference model, a policy rank dies: killed, out of memory,
its node gone) or of the reward (:class:`~openrlhf_ext.reporting.failures.RewardUnavailable`) is one a
new attempt can get past; any other error (a bug, a bad input, a run that trains 0 steps) would only
happen again and ends the run at once. For a restart the driver leaves the failed attempt's guarded
run (:mod:`~openrlhf_ext.job.run_guard`: Ray shut down, every process of the attempt stopped),
points ``latest`` at the newest intact checkpoint (:func:`~openrlhf_ext.trainer.checkpoints.resolve_resume`),
and runs OpenRLHF's driver again with ``--ckpt.load_enable``.

``metrics.jsonl`` keeps every step once: before each attempt, the records of the steps after the
one it starts from are dropped (the attempt trains them again). The trainer writes a step's record
before that step's checkpoint, so a checkpoint of step N always has the records up to N.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

from openrlhf_ext.reporting.curves import METRICS_FILE
from openrlhf_ext.reporting.failures import RewardUnavailable, RunFailure
from openrlhf_ext.trainer.checkpoints import LATEST, resolve_resume, resume_step

# A transient fault (a worker killed for memory, a reward server restarting) is survived twice; a fault
# that keeps coming back ends the run after three attempts instead of looping.
DEFAULT_MAX_RESTARTS = 2
_MAX_CHAIN = 32  # links of an error chain looked at (a chain is never this long; a cycle stops here)

logger = logging.getLogger(__name__)


def is_actor_fault(err: BaseException | None) -> bool:
    """Whether a Ray failure chain holds the death of an actor, its worker or node, or a missing reward."""
    from ray.exceptions import (
        NodeDiedError,
        ObjectLostError,
        OutOfMemoryError,
        RayActorError,
        RayTaskError,
        WorkerCrashedError,
    )

    faults = (RayActorError, WorkerCrashedError, NodeDiedError, ObjectLostError, OutOfMemoryError, RewardUnavailable)
    for _ in range(_MAX_CHAIN):
        if err is None:
            return False
        if isinstance(err, faults):  # a RayTaskError is also an instance of its cause's class
            return True
        err = err.cause if isinstance(err, RayTaskError) else err.__cause__
    return False


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
        # A run that did not resume restarts from its own checkpoints only, not from older ones in the folder.
        args.ckpt.load_enable = resumed or _saved_since(args, started)
        resolve_resume(args)
        drop_redone_steps(args)
        logger.info("restart %d/%d: resuming after step %s", restart, limit, resume_step(args))
