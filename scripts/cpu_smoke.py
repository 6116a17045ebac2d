#!/usr/bin/env python
"""End-to-end CPU smoke run of OpenRLHF's STOCK Ray driver through the openrlhf_ext platform layer.

It writes a model (tiny random SmolLM2-shaped by default, or the embedded SmolLM2-135M-Instruct),
16 arithmetic prompts with answers and a reward file into a work directory, then runs
``python -m openrlhf.cli.train_ppo_ray`` (the stock parser and ``train(args)``, via runpy) in a
child process after :func:`openrlhf_ext.trainer.cpu.install_driver_patches`: GRPO (``group_norm``),
4 samples per prompt, DeepSpeed ZeRO-3 on gloo, KL to a reference-model actor, weights synced to
the CPU generator after every step.

While it runs, it samples every second the summed RSS of the driver and all its descendants (Ray's
GCS, raylet and every worker) and the machine's used memory, and prints wall time and peaks.

    python scripts/cpu_smoke.py                      # tiny model, 1 policy rank, 2 steps
    python scripts/cpu_smoke.py --model smollm2 --policy-ranks 2
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REWARD_FILE = '''\
"""Smoke-test reward: 1 when the last number of the response equals the label, else 0."""
import re

import torch


def reward_func(queries, prompts, labels):
    rewards = []
    for query, prompt, label in zip(queries, prompts, labels):
        response = query[len(prompt):] if query.startswith(prompt) else query
        numbers = re.findall(r"-?\\d+", response)
        rewards.append(1.0 if numbers and numbers[-1] == str(label).strip() else 0.0)
    rewards = torch.tensor(rewards)
    return {"rewards": rewards, "scores": rewards, "extra_logs": {}}
'''

DRIVER = """
import runpy, sys
from openrlhf_ext.trainer.cpu import ensure_ray_for_cpu, install_driver_patches
print("[cpu_smoke] patched:", install_driver_patches(), flush=True)
ensure_ray_for_cpu()  # Ray with the worker setup hook, before the stock train() would start one without
sys.argv = ["openrlhf.cli.train_ppo_ray", *sys.argv[1:]]
runpy.run_module("openrlhf.cli.train_ppo_ray", run_name="__main__", alter_sys=True)
"""


def write_prompts(path: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(n):
            a, b = rng.randint(1, 20), rng.randint(1, 20)
            question = f"What is {a} + {b}? Answer with the number only."
            f.write(json.dumps({"input": question, "label": str(a + b)}) + "\n")


def prepare(workdir: Path, model: str, n_prompts: int) -> tuple[str, Path, Path]:
    from openrlhf_ext.models import build_tiny_model, ensure_embedded_model

    workdir.mkdir(parents=True, exist_ok=True)
    model_path = ensure_embedded_model() if model == "smollm2" else build_tiny_model(workdir / "tiny_model")
    prompts = workdir / "prompts.jsonl"
    write_prompts(prompts, n_prompts, seed=0)
    reward = workdir / "reward.py"
    reward.write_text(REWARD_FILE)
    return model_path, prompts, reward


def stock_args(model_path: str, prompts: Path, reward: Path, workdir: Path, opts: argparse.Namespace) -> list[str]:
    rollout_batch = opts.prompts // opts.steps
    samples = rollout_batch * opts.n_samples
    return [
        "--actor.model_name_or_path", model_path,
        "--data.prompt_dataset", str(prompts),
        "--data.input_key", "input",
        "--data.label_key", "label",
        "--data.apply_chat_template",
        "--reward.remote_url", str(reward),
        "--algo.advantage.estimator", "group_norm",
        "--rollout.n_samples_per_prompt", str(opts.n_samples),
        "--rollout.batch_size", str(rollout_batch),
        "--rollout.micro_batch_size", "4",
        "--rollout.max_new_tokens", str(opts.max_new_tokens),
        "--rollout.temperature", "1.0",
        "--data.max_len", str(opts.max_new_tokens + 96),
        "--train.batch_size", str(samples),
        "--train.micro_batch_size", "4",
        "--train.max_epochs", "1",
        "--train.num_episodes", "1",
        "--actor.num_nodes", "1",
        "--actor.num_gpus_per_node", str(opts.policy_ranks),
        "--ref.num_nodes", "1",
        "--ref.num_gpus_per_node", "1",
        "--vllm.num_engines", "1",
        "--ds.zero_stage", "3",
        "--ds.param_dtype", "bf16",
        "--actor.adam.lr", "1e-5",
        "--algo.kl.init_coef", "0.01",
        "--algo.kl.use_loss",
        "--algo.kl.estimator", "k3",
        "--ckpt.output_dir", str(workdir / "ckpt"),
        "--ckpt.path", str(workdir / "ckpt" / "checkpoints"),
    ]  # fmt: skip


class MemorySampler(threading.Thread):
    """Peak summed RSS of a process tree and peak machine-wide used memory, sampled every second."""

    def __init__(self, root_pid: int, interval_s: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(root_pid)
        self.interval_s = interval_s
        self.baseline_used = psutil.virtual_memory().total - psutil.virtual_memory().available
        self.peak_rss = 0
        self.peak_used = 0
        self.peak_processes = 0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            rss, count = 0, 0
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for proc in procs:
                try:
                    rss += proc.memory_info().rss
                    count += 1
                except psutil.NoSuchProcess:
                    continue
            vm = psutil.virtual_memory()
            self.peak_rss = max(self.peak_rss, rss)
            self.peak_used = max(self.peak_used, vm.total - vm.available - self.baseline_used)
            self.peak_processes = max(self.peak_processes, count)
            self._done.wait(self.interval_s)

    def stop(self) -> None:
        self._done.set()
        self.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/openrlhf_ext_cpu_smoke"))
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--steps", type=int, default=2, help="training steps (rollout batches) to run")
    parser.add_argument("--n-samples", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--policy-ranks", type=int, default=1, help="DeepSpeed ranks of the policy")
    parser.add_argument("--log", type=Path, default=None, help="driver log (default: WORKDIR/driver.log)")
    opts = parser.parse_args()
    if opts.prompts % opts.steps:
        parser.error("--prompts must be a multiple of --steps")

    t0 = time.time()
    model_path, prompts, reward = prepare(opts.workdir, opts.model, opts.prompts)
    prep_s = time.time() - t0
    cmd = [sys.executable, "-c", DRIVER, *stock_args(model_path, prompts, reward, opts.workdir, opts)]
    log_path = opts.log or opts.workdir / "driver.log"
    print(f"[cpu_smoke] model {model_path}; driver log {log_path}", flush=True)
    t1 = time.time()
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=os.environ.copy())
        sampler = MemorySampler(proc.pid)
        sampler.start()
        rc = proc.wait()
        sampler.stop()
    run_s = time.time() - t1
    steps = [line for line in log_path.read_text().splitlines() if "Global step" in line]
    gib = 1024**3
    print(f"[cpu_smoke] exit code {rc}; {len(steps)} training steps logged")
    for line in steps:
        print("  " + line[line.index("Global step") :][:400])
    print(
        f"[cpu_smoke] wall: prepare {prep_s:.0f} s, run {run_s:.0f} s; peak summed RSS of "
        f"{sampler.peak_processes} processes {sampler.peak_rss / gib:.2f} GiB; peak machine used memory "
        f"above baseline {sampler.peak_used / gib:.2f} GiB"
    )
    return rc if rc else (0 if len(steps) >= opts.steps else 1)


if __name__ == "__main__":
    sys.exit(main())
