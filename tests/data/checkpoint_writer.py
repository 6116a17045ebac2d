"""One process of a training run, as far as checkpoints go: a DeepSpeed ZeRO-3 engine (gloo, one rank,
CPU patches as in our Ray workers) resumes from ``CKPT_DIR`` when it holds a checkpoint, takes one
optimizer step, and saves ``global_step<STEP>`` through OpenRLHF's own ``DeepspeedStrategy.save_ckpt``
made atomic by ``openrlhf_ext.trainer.checkpoints.atomic_save_ckpt``.

Usage: checkpoint_writer.py CKPT_DIR STEP MAX_NUM [KILL_AFTER_FILES]
Prints ``loaded <step>`` (the step of the checkpoint it resumed from, 0 for none). With
KILL_AFTER_FILES, the process SIGKILLs itself right after DeepSpeed has written that many files of the
new checkpoint: a kill in the middle of a save.
"""

from __future__ import annotations

import os
import signal
import sys
from contextlib import nullcontext

import deepspeed
import torch

from openrlhf_ext.cli.train_config import resolve_train_config
from openrlhf_ext.cpu import apply_worker_patches
from openrlhf_ext.reaches.patching import swapped
from openrlhf_ext.trainer.checkpoints import atomic_save_ckpt


def kill_after(files: int):
    """torch.save that kills this process once ``files`` files have been written."""
    written = []
    original = torch.save

    def save(obj, path, *args, **kwargs):
        original(obj, path, *args, **kwargs)
        written.append(path)
        if len(written) >= files:
            os.kill(os.getpid(), signal.SIGKILL)

    return save


def main(ckpt_dir: str, step: int, max_num: int, kill_after_files: int | None) -> None:
    # After openrlhf_ext (imported above): it installs the stand-ins of the GPU-only modules OpenRLHF imports.
    from openrlhf.utils.deepspeed import DeepspeedStrategy

    apply_worker_patches()
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ["WRITER_PORT"], RANK="0", WORLD_SIZE="1",
                      LOCAL_RANK="0")
    deepspeed.init_distributed(dist_backend="gloo")
    args = resolve_train_config(["--pretrain", "/m", "--prompt_data", "/d.jsonl", "--remote_rm_url", "/r.py",
                                 "--advantage_estimator", "reinforce", "--zero_stage", "3"])
    strategy = DeepspeedStrategy(zero_stage=3, args=args)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Linear(16, 4))
    config = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": 3},
              "zero_allow_untested_optimizer": True}
    engine, *_ = deepspeed.initialize(model=model, optimizer=torch.optim.AdamW(model.parameters(), lr=1e-2),
                                      config=config)
    loaded = 0
    if os.path.isfile(os.path.join(ckpt_dir, "latest")):
        _, states = engine.load_checkpoint(ckpt_dir)
        loaded = states["global_step"]
    print(f"loaded {loaded}", flush=True)
    loss = engine(torch.ones(2, 16)).pow(2).sum()
    engine.backward(loss)
    engine.step()
    save = atomic_save_ckpt(strategy.save_ckpt, zero_stage=3, is_rank_0=strategy.is_rank_0)
    with swapped(torch, "save", kill_after(kill_after_files)) if kill_after_files else nullcontext():
        save(engine, ckpt_dir, f"global_step{step}", max_num, 1000, {"global_step": step})


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else None)
