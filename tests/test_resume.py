"""Resume picks the newest intact checkpoint, says what it skipped and why, or starts fresh."""

from __future__ import annotations

from pathlib import Path

import torch

from openrlhf_ext.cli.args import resolve_train_config
from openrlhf_ext.trainer.checkpoints import resolve_resume


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


def test_intact_latest_is_kept(tmp_path, capsys):
    actor = tmp_path / "ckpt" / "_actor"
    save_step(actor, 2), save_step(actor, 4)
    args = config(tmp_path)
    resolve_resume(args)
    assert (actor / "latest").read_text() == "global_step4" and args.ckpt.load_enable
    assert capsys.readouterr().out == ""


def test_damaged_newest_checkpoints_are_skipped_with_reasons(tmp_path, capsys):
    actor = tmp_path / "ckpt" / "_actor"
    save_step(actor, 2)
    damaged = save_step(actor, 4)
    (damaged / "zero_pp_rank_1_mp_rank_00_model_states.pt").unlink()
    truncated = save_step(actor, 6) / "bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt"
    truncated.write_bytes(truncated.read_bytes()[:-40])
    args = config(tmp_path)
    resolve_resume(args)
    assert (actor / "latest").read_text() == "global_step2" and args.ckpt.load_enable
    out = capsys.readouterr().out
    assert f"resuming from {actor / 'global_step2'}; skipped: " in out
    assert "global_step6 (latest): bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt is incomplete" in out
    assert "global_step4: model states of ranks [0] but optimizer states of ranks [0, 1]" in out


def test_latest_naming_a_missing_folder_falls_back(tmp_path, capsys):
    actor = tmp_path / "ckpt" / "_actor"
    save_step(actor, 3)
    (actor / "latest").write_text("global_step9")
    resolve_resume(args := config(tmp_path))
    assert (actor / "latest").read_text() == "global_step3" and args.ckpt.load_enable
    assert "skipped: global_step9 (latest): no such folder" in capsys.readouterr().out


def test_empty_actor_folder_or_no_intact_checkpoint_starts_fresh(tmp_path, capsys):
    actor = tmp_path / "ckpt" / "_actor"
    actor.mkdir(parents=True)  # a kill during the first save
    resolve_resume(args := config(tmp_path))
    assert args.ckpt.load_enable is False
    assert f"WARNING: no intact checkpoint in {actor}, starting fresh; skipped: no latest file" in capsys.readouterr().out
    (save_step(actor, 1) / "zero_pp_rank_0_mp_rank_00_model_states.pt").unlink()
    (save_step(actor, 2) / "zero_pp_rank_0_mp_rank_00_model_states.pt").unlink()
    (actor / "latest").unlink()
    resolve_resume(args := config(tmp_path))
    assert args.ckpt.load_enable is False
    out = capsys.readouterr().out
    assert "skipped: no latest file; global_step2: model states of ranks [1]" in out and "global_step1:" in out


def test_without_load_checkpoint_nothing_is_touched(tmp_path):
    actor = tmp_path / "ckpt" / "_actor"
    save_step(actor, 2)
    (actor / "latest").write_text("global_step7")
    args = resolve_train_config(["--pretrain", "/m", "--prompt_data", "/d.jsonl", "--remote_rm_url", "/r.py",
                                 "--advantage_estimator", "reinforce", "--ckpt_path", str(tmp_path / "ckpt")])
    resolve_resume(args)
    assert (actor / "latest").read_text() == "global_step7"
