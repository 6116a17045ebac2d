"""End to end on CPU through real Ray actors: train, resume, and submit with ``ray job submit``.

Real parts: the CLI, OpenRLHF's driver, Ray actors (trainer, policy on DeepSpeed ZeRO-3/gloo,
reference model, CPU rollout generator), our experience maker and loss, the weight sync, the math
reward. The model is a tiny randomly initialised SmolLM2-shaped one (built from the embedded
model's config and tokenizer) to keep CI fast.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from helpers import HALF_FILTERED_REWARD, REPO_ROOT, free_port, read_metrics, small_run_flags
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

def run_cli(flags: list[str], log: Path) -> None:
    with log.open("w") as f:
        proc = subprocess.run([sys.executable, "-m", "openrlhf_ext.cli.train_ppo_ray", *flags],
                              stdout=f, stderr=subprocess.STDOUT, timeout=900, cwd=log.parent)
    assert proc.returncode == 0, log.read_text()[-5000:]


def test_train_two_steps_then_resume_to_four(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    flags = [*small_run_flags(tiny_model_dir, out), "--remote_rm_url", HALF_FILTERED_REWARD,
             "--advantage_estimator", "reinforce_rej", "--ckpt.save_steps", "1",
             "--ckpt.path", str(out / "ckpt"), "--ckpt.load_enable"]
    run_cli(flags, tmp_path / "first.log")
    first = read_metrics(out)
    assert [r["step"] for r in first] == [1, 2]
    for record in first:  # every step has a mixed group (see the reward file): none is skipped
        assert record["ext/skipped_step"] == 0
        assert math.isfinite(record["policy_loss"]) and math.isfinite(record["actor_grad_norm"])
        assert record["actor_grad_norm"] > 0
        assert record["ext/forward_skipped_fraction"] == pytest.approx(1 - record["ext/kept_fraction"])
    # 3 of the 8 prompts have all-correct groups: Reinforce-Rej drops them before the forward passes.
    assert sum(r["ext/groups_all_correct"] for r in first) / len(first) == pytest.approx(3 / 8)
    assert sum(r["ext/kept_fraction"] for r in first) / len(first) == pytest.approx(5 / 8)
    start = load_file(Path(tiny_model_dir) / "model.safetensors")
    trained = load_file(out / "model.safetensors")
    assert any((start[k] - trained[k]).abs().max() > 0 for k in start), "training did not change the weights"
    assert (out / "curves.png").stat().st_size > 0 and "first 5 steps" in (out / "summary.md").read_text()

    # Same flags, one more episode: resumes from the step-2 checkpoint and continues the count.
    run_cli([*flags, "--num_episodes", "2"], tmp_path / "second.log")
    resumed = read_metrics(out)
    assert [r["step"] for r in resumed] == [1, 2, 3, 4]
    assert "global_step2" in os.listdir(out / "ckpt" / "_actor")


def wait_for_dashboard(url: str, head: subprocess.Popen, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise AssertionError(f"ray head exited early:\n{head.stdout.read()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/api/version", timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"no Ray dashboard at {url} after {timeout_s:.0f} s")


def test_ray_job_submit_on_a_local_head(tmp_path, tiny_model_dir):
    ray_bin = str(Path(sys.executable).with_name("ray"))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # explicit addresses below
    env["PYTHONUNBUFFERED"] = "1"
    gcs_port, dashboard_port = free_port(), free_port()
    # Every port a head opens is picked here: Ray's fixed defaults (e.g. the dashboard agent's 52365)
    # are taken by any other Ray instance on the machine (the session's `local_ray`), and a head whose
    # agent cannot bind never accepts jobs ("No available agent to submit job").
    agent_ports = [f"--{name}={free_port()}" for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
        "metrics-export-port", "ray-client-server-port", "node-manager-port", "object-manager-port")]
    address = f"http://127.0.0.1:{dashboard_port}"
    ray_temp = tempfile.mkdtemp(prefix="rayjob", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    # --block keeps the head in this child process: terminating it stops this head only, not the
    # other Ray instances on the machine (`ray stop` would stop them all).
    head = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", "--num-cpus", "2", "--num-gpus", "0", "--node-ip-address",
         "127.0.0.1", "--dashboard-host", "127.0.0.1", "--disable-usage-stats", "--port", str(gcs_port),
         "--dashboard-port", str(dashboard_port), "--temp-dir", ray_temp, *agent_ports],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    out = tmp_path / "job"
    try:
        wait_for_dashboard(address, head)
        # The default reward file: the project's math reward, scored inside the job's workers. The
        # head was started without our env, so signed rewards reach them only through the runtime env.
        flags = [*small_run_flags(tiny_model_dir, out), "--advantage_estimator", "group_norm", "--ext.signed_reward"]
        for _ in range(10):  # the head's job agent can lag its dashboard by a few seconds
            submit = subprocess.run(
                [ray_bin, "job", "submit", "--address", address, "--working-dir", str(REPO_ROOT),
                 "--", sys.executable, "-m", "openrlhf_ext.cli.train_ppo_ray", *flags],
                env={**env, "RAY_ADDRESS": address}, timeout=900, capture_output=True, text=True,
            )
            if "No available agent to submit job" not in submit.stderr:
                break
            time.sleep(5)
        assert submit.returncode == 0, (submit.stdout + submit.stderr)[-5000:]
        assert "succeeded" in submit.stdout.lower()
        records = read_metrics(out)
        assert [r["step"] for r in records] == [1, 2]
        # ±1 rewards: the random tiny model is wrong far more often than right (0/1 rewards give >= 0).
        assert all(-1.0 <= r["ext/reward_mean"] < 0 for r in records)
        # The math reward's per-sample logs became per-step statistics.
        assert all(r["reward/latency_p99_s"] >= r["reward/latency_p50_s"] > 0 for r in records)
        assert all(r["reward/timeout_count"] == 0 for r in records)
    finally:
        head.terminate()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()
        shutil.rmtree(ray_temp, ignore_errors=True)
