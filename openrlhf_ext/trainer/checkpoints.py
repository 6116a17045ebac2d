"""Resume from the newest intact checkpoint (``--ckpt.load_enable``), decided before Ray starts.

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

import os
import re
import zipfile
from pathlib import Path
from types import SimpleNamespace

LATEST = "latest"
_STEP_DIR = re.compile(r"^global_step(\d+)$")
_RANK = re.compile(r"zero_pp_rank_(\d+)_")


def _log(message: str) -> None:
    print(f"[openrlhf_ext] resume: {message}", flush=True)


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
            tmp = latest_file.with_name(f".{LATEST}.tmp")
            tmp.write_text(candidate.name)
            os.replace(tmp, latest_file)  # atomic: a kill leaves the old or the new pointer
            _log(f"resuming from {candidate}; skipped: {'; '.join(skipped)}")
            return
        skipped.append(f"{candidate.name}: {problem}")
    args.ckpt.load_enable = False
    _log(f"WARNING: no intact checkpoint in {actor_dir}, starting fresh; skipped: {'; '.join(skipped)}")
