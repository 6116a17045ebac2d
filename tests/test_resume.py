"""Checkpoints are committed atomically; resume picks the newest intact one, says what it skipped and
why, or starts fresh."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import free_port

from openrlhf_ext.cli.train_config import resolve_train_config
from openrlhf_ext.trainer import checkpoints
from openrlhf_ext.trainer.checkpoints import (
    INCOMING,
    CheckpointWriteError,
    checkpoint_problem,
    commit_checkpoint,
    resolve_resume,
)


def save_step(actor_dir: Path, step: int, ranks: int = 2) -> Path:
    """A ZeRO-3 checkpoint folder as DeepSpeed writes it: model and optimizer states of each rank."""
    folder = actor_dir / f"global_step{step}"
    folder.mkdir(parents=True)
    for rank in range(ranks):
        torch.save({"step": step}, folder / f"zero_pp_rank_{rank}_mp_rank_00_model_states.pt")
        torch.save({"step": step}, folder / f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")
    (actor_dir / "latest").write_text(folder.name)
    return folder


def config(tmp_path: Path, *flags: str):
    return resolve_train_config(["--pretrain", "/m", "--prompt_data", "/d.jsonl", "--remote_rm_url", "/r.py",
                                 "--advantage_estimator", "reinforce", "--zero_stage", "3",
                                 "--ckpt_path", str(tmp_path / "ckpt"), "--load_checkpoint", *flags])


@pytest.fixture
def logged(caplog) -> pytest.LogCaptureFixture:
    """Our log messages (this module runs no command, which would configure their level)."""
    caplog.set_level(logging.INFO, logger="openrlhf_ext")
    return caplog


def resume_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == checkpoints.__name__]


def test_intact_latest_is_kept(tmp_path, logged):
    actor = tmp_path / "ckpt" / "_actor"
    save_step(actor, 2), save_step(actor, 4)
    args = config(tmp_path)
    resolve_resume(args)
    assert (actor / "latest").read_text() == "global_step4" and args.ckpt.load_enable
    assert resume_records(logged) == []


def test_damaged_newest_checkpoints_are_skipped_with_reasons(tmp_path, logged):
    actor = tmp_path / "ckpt" / "_actor"
    save_step(actor, 2)
    damaged = save_step(actor, 4)
    (damaged / "zero_pp_rank_1_mp_rank_00_model_states.pt").unlink()
    truncated = save_step(actor, 6) / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt"
    truncated.write_bytes(truncated.read_bytes()[:-40])
    args = config(tmp_path)
    resolve_resume(args)
    assert (actor / "latest").read_text() == "global_step2" and args.ckpt.load_enable
    out = logged.text
    assert f"resume: resuming from {actor / 'global_step2'}; skipped: " in out
    assert "global_step6 (latest): bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt is incomplete" in out
    assert "global_step4: model states of ranks [0] but optimizer states of ranks [0, 1]" in out


def test_latest_naming_a_missing_folder_falls_back(tmp_path, logged):
    actor = tmp_path / "ckpt" / "_actor"
    save_step(actor, 3)
    (actor / "latest").write_text("global_step9")
    resolve_resume(args := config(tmp_path))
    assert (actor / "latest").read_text() == "global_step3" and args.ckpt.load_enable
    assert "skipped: global_step9 (latest): no such folder" in logged.text


def test_empty_actor_folder_or_no_intact_checkpoint_starts_fresh(tmp_path, logged):
    actor = tmp_path / "ckpt" / "_actor"
    actor.mkdir(parents=True)  # a kill during the first save
    resolve_resume(args := config(tmp_path))
    assert args.ckpt.load_enable is False
    (record,) = resume_records(logged)
    assert record.levelno == logging.WARNING
    assert record.getMessage() == f"resume: no intact checkpoint in {actor}, starting fresh; skipped: no latest file"
    logged.clear()
    (save_step(actor, 1) / "zero_pp_rank_0_mp_rank_00_model_states.pt").unlink()
    (save_step(actor, 2) / "zero_pp_rank_0_mp_rank_00_model_states.pt").unlink()
    (actor / "latest").unlink()
    resolve_resume(args := config(tmp_path))
    assert args.ckpt.load_enable is False
    out = logged.text
    assert "skipped: no latest file; global_step2: model states of ranks [1]" in out and "global_step1:" in out


def test_without_load_checkpoint_nothing_is_touched(tmp_path):
    actor = tmp_path / "ckpt" / "_actor"
    save_step(actor, 2)
    (actor / "latest").write_text("global_step7")
    args = resolve_train_config(["--pretrain", "/m", "--prompt_data", "/d.jsonl", "--remote_rm_url", "/r.py",
                                 "--advantage_estimator", "reinforce", "--ckpt_path", str(tmp_path / "ckpt")])
    resolve_resume(args)
    assert (actor / "latest").read_text() == "global_step7"


# ---- atomic saves ---------------------------------------------------------------------------------

WRITER = str(Path(__file__).parent / "data" / "checkpoint_writer.py")


def write_checkpoint(actor: Path, step: int, max_num: int, kill_after_files: int | None = None) -> tuple[int, str]:
    """One real process saving ``global_step<step>`` (DeepSpeed ZeRO-3 + OpenRLHF's save_ckpt, made atomic)."""
    cmd = [sys.executable, WRITER, str(actor), str(step), str(max_num)]
    if kill_after_files:
        cmd.append(str(kill_after_files))
    env = {**os.environ, "WRITER_PORT": str(free_port())}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.slow
def test_a_kill_during_a_save_leaves_the_previous_checkpoint_and_latest_on_it(tmp_path):
    actor = tmp_path / "ckpt" / "_actor"
    code, log = write_checkpoint(actor, 1, max_num=1)
    assert code == 0, log[-3000:]
    # --ckpt.max_num 1: stock deletes global_step1 before writing global_step2, then dies mid-write.
    code, log = write_checkpoint(actor, 2, max_num=1, kill_after_files=1)
    assert code == -signal.SIGKILL, log[-3000:]
    assert (actor / INCOMING / "global_step2").is_dir() and not (actor / "global_step2").exists()
    assert (actor / "latest").read_text() == "global_step1"
    assert checkpoint_problem(actor / "global_step1", zero_stage=3) is None
    # The next process resumes from it and its save replaces it (max_num 1) once the new one is in place.
    code, log = write_checkpoint(actor, 2, max_num=1)
    assert code == 0 and "loaded 1" in log, log[-3000:]
    assert sorted(p.name for p in actor.iterdir()) == [INCOMING, "global_step2", "latest", "zero_to_fp32.py"]
    assert not any((actor / INCOMING).iterdir())
    assert (actor / "latest").read_text() == "global_step2"
    assert checkpoint_problem(actor / "global_step2", zero_stage=3) is None


def test_a_save_that_does_not_verify_is_not_committed(tmp_path):
    actor = tmp_path / "ckpt" / "_actor"
    save_step(actor, 1)
    staged = save_step(actor / INCOMING, 2)
    (staged / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink()
    with pytest.raises(CheckpointWriteError) as info:
        commit_checkpoint(actor, "global_step2", zero_stage=3, max_num=1, max_mem_gib=1000)
    assert str(info.value) == ("checkpoint global_step2 did not verify (model states of ranks [0, 1] but optimizer "
                               f"states of ranks [0]); latest still names global_step1 in {actor}")
    assert (actor / "latest").read_text() == "global_step1" and (actor / "global_step1").is_dir()


def test_commit_keeps_the_newest_max_num_and_every_other_best(tmp_path):
    actor = tmp_path / "ckpt" / "_actor"
    for step in (1, 2, 3):
        save_step(actor, step)
    save_step(actor, 9).rename(actor / "best_global_step9")
    save_step(actor / INCOMING, 4)
    commit_checkpoint(actor, "global_step4", zero_stage=3, max_num=2, max_mem_gib=1000)
    assert sorted(p.name for p in actor.iterdir() if p.is_dir()) == [
        INCOMING, "best_global_step9", "global_step3", "global_step4"]
    assert (actor / "latest").read_text() == "global_step4"
    save_step(actor / INCOMING, 5)
    commit_checkpoint(actor, "global_step5", zero_stage=3, max_num=2, max_mem_gib=1e-9)  # over max_mem: newest only
    assert sorted(p.name for p in actor.iterdir() if p.is_dir()) == [INCOMING, "best_global_step9", "global_step5"]
