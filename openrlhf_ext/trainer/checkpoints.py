"""Checkpoints that survive a kill: written atomically, and resumed from the newest intact one.

**Writing.** Stock OpenRLHF deletes the checkpoints over ``--ckpt.max_num`` *before* saving the new
one, and DeepSpeed writes the new one in place and points ``latest`` at it; with ``--ckpt.max_num 1``
a kill during a save leaves no intact checkpoint. :func:`atomic_save_ckpt` wraps OpenRLHF's
``save_ckpt`` instead: DeepSpeed writes into ``_actor/.incoming/<tag>``, the folder is verified with
:func:`checkpoint_problem`, moved into place, ``latest`` is switched to it (an atomic
``os.replace``), and only then are old checkpoints deleted. A kill at any moment leaves ``latest``
naming an intact checkpoint: the previous one until the switch, the new one after it.

**Resuming** (``--ckpt.load_enable``), decided before Ray starts.

OpenRLHF resumes from the DeepSpeed checkpoint that ``<ckpt.path>/_actor/latest`` names. When that
checkpoint is damaged (a file deleted, a kill during a save), DeepSpeed stops with a bare assertion;
when ``_actor`` is empty or has no ``latest`` (a kill during the first save), OpenRLHF fails with
``KeyError: 'episode'``. Here the checkpoints are inspected first: ``latest`` is pointed at the newest
intact ``global_stepN`` (saying which newer ones were skipped and why), or, with none intact, the run
starts fresh with a warning.

A checkpoint is intact when it holds the model states and the optimizer states of the same ranks,
each a complete ``torch.save`` archive (a zip file: a cut-off one lacks its end record).
"""

from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

LATEST = "latest"
INCOMING = ".incoming"  # where DeepSpeed writes a checkpoint before it is verified and moved into place
_STEP_DIR = re.compile(r"^global_step(\d+)$")
_BEST_DIR = re.compile(r"^best_global_step\d+$")
_TAG_STEP = re.compile(r"global_step(\d+)$")
_RANK = re.compile(r"zero_pp_rank_(\d+)_")

logger = logging.getLogger(__name__)


def checkpoint_problem(path: Path, zero_stage: int) -> str | None:
    """Why the DeepSpeed checkpoint folder ``path`` cannot be resumed from (None if it can)."""
    if not path.is_dir():
        return "no such folder"
    model = sorted(path.glob("*model_states.pt"))
    optim = sorted(path.glob("*optim_states.pt"))
    if not model:
        return "no model states file (*model_states.pt)"
    if zero_stage > 0 and not optim:  # without ZeRO the optimizer is inside the model states
        return "no optimizer states file (*optim_states.pt)"
    optim_ranks = {int(m.group(1)) for f in optim if (m := _RANK.search(f.name))}
    if optim_ranks != set(range(len(optim))):
        return f"optimizer states of ranks {sorted(optim_ranks)}, expected 0..{len(optim) - 1}"
    model_ranks = {int(m.group(1)) for f in model if (m := _RANK.search(f.name))}
    if model_ranks and model_ranks != optim_ranks:  # ZeRO-3: one model states file per rank
        return f"model states of ranks {sorted(model_ranks)} but optimizer states of ranks {sorted(optim_ranks)}"
    for file in model + optim:
        if not zipfile.is_zipfile(file):
            return f"{file.name} is incomplete (not a whole torch.save archive)"
    return None


def _step_dirs(actor_dir: Path) -> list[Path]:
    """``global_stepN`` folders, newest (largest N) first."""
    dirs = [(int(m.group(1)), d) for d in actor_dir.iterdir() if d.is_dir() and (m := _STEP_DIR.match(d.name))]
    return [d for _, d in sorted(dirs, reverse=True)]


def resolve_resume(args: SimpleNamespace) -> None:
    """Point ``latest`` at an intact checkpoint, or turn ``--ckpt.load_enable`` off (start fresh)."""
    actor_dir = Path(args.ckpt.path) / "_actor"
    if not args.ckpt.load_enable or not actor_dir.is_dir():
        return  # OpenRLHF starts fresh by itself
    latest_file = actor_dir / LATEST
    named = latest_file.read_text().strip() if latest_file.is_file() else None
    zero_stage = args.ds.zero_stage
    if named and checkpoint_problem(actor_dir / named, zero_stage) is None:
        return
    skipped = []
    if named:
        skipped.append(f"{named} ({LATEST}): {checkpoint_problem(actor_dir / named, zero_stage)}")
    else:
        skipped.append(f"no {LATEST} file")
    for candidate in _step_dirs(actor_dir):
        if candidate.name == named:
            continue
        problem = checkpoint_problem(candidate, zero_stage)
        if problem is None:
            point_latest(actor_dir, candidate.name)
            logger.info("resume: resuming from %s; skipped: %s", candidate, "; ".join(skipped))
            return
        skipped.append(f"{candidate.name}: {problem}")
    args.ckpt.load_enable = False
    logger.warning("resume: no intact checkpoint in %s, starting fresh; skipped: %s", actor_dir, "; ".join(skipped))


def point_latest(actor_dir: Path, tag: str) -> None:
    """Make ``actor_dir/latest`` name ``tag``; atomic: a kill leaves the old or the new pointer."""
    tmp = actor_dir / f".{LATEST}.tmp"
    tmp.write_text(tag)
    os.replace(tmp, actor_dir / LATEST)


def latest_tag(actor_dir: Path) -> str | None:
    """The checkpoint ``actor_dir/latest`` names (None without one)."""
    latest_file = actor_dir / LATEST
    return latest_file.read_text().strip() if latest_file.is_file() else None


def resume_step(args: SimpleNamespace) -> int:
    """The step a run continues after: that of the checkpoint it loads, 0 when it starts fresh."""
    if not args.ckpt.load_enable:
        return 0
    tag = latest_tag(Path(args.ckpt.path) / "_actor")
    match = _TAG_STEP.search(tag or "")
    return int(match.group(1)) if match else 0


class CheckpointWriteError(RuntimeError):
    """A checkpoint that DeepSpeed wrote did not verify; ``latest`` still names the previous one."""


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _rotate(actor_dir: Path, keep: str, max_num: int, max_mem_gib: float) -> None:
    """Delete old checkpoints, never ``keep`` (the one ``latest`` names): other ``best_*`` ones when
    ``keep`` is a best checkpoint, regular ones beyond the newest ``max_num``, then the oldest regular
    ones while all of them take more than ``max_mem_gib``. Unlike stock, the regular ones go by step
    order, not by their eval metric: a restart resumes from the newest."""
    if _BEST_DIR.match(keep):
        doomed = [d for d in actor_dir.iterdir() if d.is_dir() and _BEST_DIR.match(d.name) and d.name != keep]
        for old in doomed:
            shutil.rmtree(old)
        return
    regular = [d for d in _step_dirs(actor_dir) if d.name != keep]  # newest first
    kept = regular[: max(max_num - 1, 0)]
    for old in regular[len(kept):]:
        shutil.rmtree(old)
    limit = max_mem_gib * 1024**3
    while kept and sum(_dir_bytes(d) for d in [actor_dir / keep, *kept]) > limit:
        shutil.rmtree(kept.pop())


def commit_checkpoint(actor_dir: Path, tag: str, zero_stage: int, max_num: int, max_mem_gib: float) -> None:
    """Verify ``actor_dir/.incoming/<tag>``, move it to ``actor_dir/<tag>``, point ``latest`` at it,
    then delete old checkpoints (:func:`_rotate`)."""
    staged = actor_dir / INCOMING / tag
    problem = checkpoint_problem(staged, zero_stage)
    if problem is not None:
        raise CheckpointWriteError(f"checkpoint {tag} did not verify ({problem}); {LATEST} still names "
                                   f"{latest_tag(actor_dir)} in {actor_dir}")
    final = actor_dir / tag
    if final.exists():  # left by a run killed between this move and the switch: latest never named it
        shutil.rmtree(final)
    os.replace(staged, final)
    for script in (actor_dir / INCOMING).glob("*.py"):  # DeepSpeed's zero_to_fp32.py, where stock has it
        os.replace(script, actor_dir / script.name)
    point_latest(actor_dir, tag)
    _rotate(actor_dir, tag, max_num, max_mem_gib)


def atomic_save_ckpt(save_ckpt: Callable[..., Any], zero_stage: int, is_rank_0: Callable[[], bool]) -> Callable[..., None]:
    """OpenRLHF's ``DeepspeedStrategy.save_ckpt`` (same signature), made atomic (module docstring).

    Every rank calls it. Stock ``save_ckpt`` runs with the staging folder as its save dir and without
    ``latest``: its rotation sees only that (emptied) folder, its barrier orders rank 0's emptying before
    any write, and DeepSpeed's closing barrier has every rank's files written before rank 0 commits.
    The other ranks wait for the commit in the barrier that ends OpenRLHF's ``save_checkpoint``.
    """

    def save(model, save_dir, tag=None, max_num=3, max_mem=1000, client_state=None, save_latest=True,  # noqa: ARG001  (the switch of latest is the commit)
             **kwargs) -> None:
        actor_dir = Path(save_dir)
        tag = tag or f"global_step{model.global_steps}"  # DeepSpeed's own default tag
        staging = actor_dir / INCOMING
        if is_rank_0():
            shutil.rmtree(staging, ignore_errors=True)  # what a killed save left
        save_ckpt(model, str(staging), tag, max_num, max_mem, client_state, save_latest=False, **kwargs)
        if is_rank_0():
            commit_checkpoint(actor_dir, tag, zero_stage, max_num, max_mem)

    return save


def atomic_save_ckpt_method(save_ckpt: Callable[..., Any]) -> Callable[..., None]:
    """``DeepspeedStrategy.save_ckpt`` made atomic, as a method (the ``policy worker`` reach of
    :data:`openrlhf_ext.reaches.REACHES`): the strategy gives its ZeRO stage and rank."""

    def save(strategy, *args, **kwargs) -> None:
        stock = functools.partial(save_ckpt, strategy)
        atomic_save_ckpt(stock, strategy.args.ds.zero_stage, strategy.is_rank_0)(*args, **kwargs)

    return save
