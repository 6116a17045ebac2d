"""Chaos: one run loses its generator, its reference model and its policy rank (kill -9, each mid-step)
and finishes anyway with ``--ext.max_restarts 3``, with the weights of a run resumed by hand; another
loses its reward server (kill -9 after step 1), waits for it to come back on its port, restarts and
finishes.

Real parts: the CLI, Ray, OpenRLHF's driver and actors on CPU (vLLM generator, reference model, policy on
DeepSpeed ZeRO-3), atomic DeepSpeed checkpoints, restarts; the actors are found among the training
process's descendants by their Ray process titles (``ray::<class>``), loopback only.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from helpers import HALF_FILTERED_REWARD, REPO_ROOT, free_port, read_metrics, small_run_flags
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

# (checkpoint committed, actor class killed right after it: the run is then in the next step)
KILLS = ((1, "RolloutRayActor"), (2, "ReferenceModelActor"), (3, "_ExtPolicyModelActor"))


def actor_pid(root: psutil.Process, class_name: str) -> int | None:
    """The pid of the Ray actor of ``class_name`` under ``root`` (its title: ``ray::Class`` or ``ray::Class.method``)."""
    for proc in root.children(recursive=True):
        try:
            title = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        if title.startswith((f"ray::{class_name} ", f"ray::{class_name}.")) or title == f"ray::{class_name}":
            return proc.pid
    return None


def latest(ckpt: Path) -> str | None:
    path = ckpt / "_actor" / "latest"
    return path.read_text() if path.is_file() else None


def wait_for(condition, proc: subprocess.Popen, log: Path, what: str, timeout_s: float = 300.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (exit {proc.returncode}) before {what}:\n{log.read_text()[-5000:]}")
        time.sleep(0.2)
    raise AssertionError(f"no {what} after {timeout_s:.0f} s:\n{log.read_text()[-5000:]}")


def flags_for(model: str, out: Path, *extra: str) -> list[str]:
    # 8 prompts, 4 per step, 2 episodes: 4 steps; KL > 0 so that a reference model runs.
    return [*small_run_flags(model, out), "--remote_rm_url", HALF_FILTERED_REWARD, "--advantage_estimator",
            "group_norm", "--init_kl_coef", "0.001", "--num_episodes", "2", "--ckpt.save_steps", "1",
            "--ckpt.max_num", "10", "--ckpt.path", str(out / "ckpt"), *extra]


def train(flags: list[str], log: Path) -> subprocess.Popen:
    with log.open("w") as f:
        return subprocess.Popen([sys.executable, "-m", "openrlhf_ext.cli.train_ppo_ray", *flags],
                                stdout=f, stderr=subprocess.STDOUT, cwd=log.parent)


def train_to_end(flags: list[str], log: Path) -> int:
    proc = train(flags, log)
    try:
        return proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_killed_generator_reference_and_policy_rank_are_survived(tmp_path, tiny_model_dir):
    out, log = tmp_path / "chaos", tmp_path / "chaos.log"
    proc = train(flags_for(tiny_model_dir, out, "--ext.max_restarts", "3"), log)
    killed = []
    try:
        root = psutil.Process(proc.pid)
        for step, class_name in KILLS:
            wait_for(lambda step=step: latest(out / "ckpt") == f"global_step{step}", proc, log,
                     f"checkpoint global_step{step}")
            pid = wait_for(lambda name=class_name: actor_pid(root, name), proc, log, f"a {class_name} process")
            os.kill(pid, signal.SIGKILL)
            killed.append((class_name, str(pid)))
        assert proc.wait(timeout=600) == 0, log.read_text()[-5000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    # One restart per kill, naming the killed actor, each resuming from the checkpoint before its kill.
    restarts = re.findall(r"\[openrlhf_ext\] restart (\d)/3 after (\S+) \(pid (\d+)", text)
    assert restarts == [(str(k), name, pid) for k, (name, pid) in enumerate(killed, 1)], text[-5000:]
    for (step, _), k in zip(KILLS, (1, 2, 3), strict=True):
        assert f"[openrlhf_ext] restart {k}/3: resuming after step {step}" in text
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3, 4]

    # A run resumed by hand from the checkpoint the last restart resumed from (a copy of it) trains the
    # last step only, and ends with the very same weights: every generation request carries a seed of
    # its own (--seed, the prompt's draw, the sample's index: trainer/rollout_seeds.py), so both draw the
    # same samples from the same weights (docs/cluster.md §5).
    last = KILLS[-1][0]
    hand, hand_log = tmp_path / "by_hand", tmp_path / "by_hand.log"
    shutil.copytree(out / "ckpt" / "_actor" / f"global_step{last}", hand / "ckpt" / "_actor" / f"global_step{last}")
    (hand / "ckpt" / "_actor" / "latest").write_text(f"global_step{last}")
    assert train_to_end(flags_for(tiny_model_dir, hand, "--ckpt.load_enable"), hand_log) == 0, \
        hand_log.read_text()[-5000:]
    [hand_step], chaos_step = read_metrics(hand), read_metrics(out)[-1]
    assert hand_step["step"] == chaos_step["step"] == 4
    for key in ("rollout/reward_mean", "entropy_loss", "actor_grad_norm"):  # the same samples, the same gradient
        assert hand_step[key] == chaos_step[key], key
    start, trained = load_file(Path(tiny_model_dir) / "model.safetensors"), load_file(out / "model.safetensors")
    assert any(not torch.equal(start[k], trained[k]) for k in start), "the run did not train"
    resumed = load_file(hand / "model.safetensors")
    assert resumed.keys() == trained.keys()
    assert all(torch.equal(resumed[k], trained[k]) for k in trained)


def start_reward_server(port: int) -> subprocess.Popen:
    """The project's math reward server on ``port`` (loopback), once it listens."""
    server = subprocess.Popen([sys.executable, "-m", "openrlhf_ext.rewards.server", "--host", "127.0.0.1", "--port",
                               str(port), "--workers", "1"], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    line = server.stdout.readline()
    assert f"listening on http://127.0.0.1:{port}/" in line, line
    return server


def test_a_killed_reward_server_is_waited_for_and_the_run_finishes(tmp_path, tiny_model_dir):
    port = free_port()
    url = f"http://127.0.0.1:{port}/get_reward"
    out, log = tmp_path / "run", tmp_path / "run.log"
    # 8 prompts, 4 per step, 2 episodes: 4 steps, each saved; the default restarts (2).
    flags = [*small_run_flags(tiny_model_dir, out), "--remote_rm_url", url, "--advantage_estimator", "group_norm",
             "--init_kl_coef", "0", "--num_episodes", "2", "--ckpt.save_steps", "1", "--ckpt.path", str(out / "ckpt")]
    servers = [start_reward_server(port)]
    proc = train(flags, log)
    try:
        wait_for(lambda: latest(out / "ckpt") == "global_step1", proc, log, "checkpoint global_step1")
        servers[0].kill()  # a later step's rollout finds no server
        servers[0].wait()
        wait_for(lambda: "does not accept connections" in log.read_text(), proc, log, "the wait for the server")
        servers.append(start_reward_server(port))  # as a supervisor would, on the same port
        assert proc.wait(timeout=600) == 0, log.read_text()[-5000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for server in servers:
            server.kill()
            server.wait()
    text = log.read_text()
    restarts = re.findall(r"\[openrlhf_ext\] restart (\d)/2 after (.*)", text)
    assert len(restarts) == 1, text[-5000:]
    assert re.match(rf"_ExtPPOTrainer\.fit \(pid \d+, node [\d.]+\) failed: RewardUnavailable: no reward for \d+ of "
                    rf"16 rollout samples from --reward\.remote_url {re.escape(url)}: cannot connect: ", restarts[0][1])
    assert f"the reward server {url} does not accept connections" in text
    assert f"[openrlhf_ext] the reward server is back: {url}" in text
    assert re.search(r"\[openrlhf_ext\] restart 1/2: resuming after step [123]\n", text), text[-5000:]
    assert [r["step"] for r in read_metrics(out)] == [1, 2, 3, 4]  # every step once
