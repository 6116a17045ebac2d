"""The cluster recipes of examples/scripts/ (issue 7), checked without a cluster.

Every recipe is run with DRY_RUN=1, which prints its `ray job submit` command instead of running
it. The training flags are then parsed and validated by the real CLI through --print_config, so a
renamed or removed flag, a bad value or a broken preset fails here rather than in a user's cluster
job. The expected values are the papers' settings, copied by hand from the recipe headers (which
cite the paper sections), not read back from the scripts.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest
from ray.runtime_env.runtime_env import _merge_runtime_env

from openrlhf_ext.cli.train_ppo_ray import main
from openrlhf_ext.cpu.worker import ray_runtime_env

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "examples" / "scripts"
MODULE = "openrlhf_ext.cli.train_ppo_ray"

# Per recipe: estimator, n samples per prompt, actor lr, KL coefficient / placement / estimator,
# and what the preset must have turned on. From Minimalist (arXiv:2504.11343) §3 + the authors' verl scripts
# (RAFT ... PPO), REINFORCE++ (arXiv:2501.03262) §4.2.3, Dr. GRPO (arXiv:2503.20783) §1 + the authors' Oat script.
MINIMALIST = {"n": 4, "lr": 1e-6, "kl": 0.001, "kl_loss": True, "kl_est": "k3", "prompts": 1024, "train_batch": 2048}
EXPECTED = {
    "train_raft.sh": {**MINIMALIST, "estimator": "raft", "policy_loss": "vanilla", "positive_only": True, "filter": "none"},
    "train_raft_pp.sh": {**MINIMALIST, "estimator": "raft_pp", "policy_loss": "ppo", "positive_only": True, "filter": "none"},
    "train_reinforce.sh": {**MINIMALIST, "estimator": "reinforce_raw", "policy_loss": "ppo", "filter": "none",
                           "baseline": "none", "std_scale": "none", "signed_reward": True},
    "train_reinforce_rej.sh": {**MINIMALIST, "estimator": "reinforce_rej", "policy_loss": "ppo", "filter": "both",
                               "baseline": "none", "std_scale": "none", "signed_reward": True},
    "train_grpo.sh": {**MINIMALIST, "estimator": "group_norm", "baseline": "group_mean", "std_scale": "group"},
    "train_ppo.sh": {**MINIMALIST, "estimator": "gae", "n": 1, "train_batch": 512, "kl_loss": False, "kl_est": "k1",
                     "critic": "Qwen/Qwen2.5-Math-7B", "critic_lr": 1e-5},
    "train_reinforce_pp.sh": {"estimator": "reinforce", "n": 8, "lr": 5e-7, "kl": 0.001, "kl_loss": False,
                              "kl_est": "k1", "prompts": 32, "std_scale": "whiten", "stats": "token",
                              "baseline": "none", "eps_clip": 0.2},
    "train_reinforce_pp_baseline.sh": {"estimator": "reinforce_baseline", "n": 8, "lr": 5e-7, "kl": 0.001,
                                       "kl_loss": True, "kl_est": "k2", "prompts": 32, "baseline": "group_mean",
                                       "std_scale": "whiten", "stats": "token"},
    "train_dr_grpo.sh": {"estimator": "dr_grpo", "n": 8, "lr": 1e-6, "kl": 0.0, "prompts": 128, "train_batch": 128,
                         "baseline": "group_mean", "std_scale": "none", "loss_agg": "seq-mean-token-sum-norm",
                         "loss_norm_tokens": 3000, "max_new_tokens": 3000, "max_len": 1024 + 3000},
    "train_lite_ppo.sh": {"estimator": "lite_ppo", "n": 8, "lr": 1e-6, "kl": 0.0, "baseline": "group_mean",
                          "std_scale": "batch", "stats": "sample", "loss_agg": "token-mean"},
}


def run_recipe(script: str, *args: str, **env: str) -> subprocess.CompletedProcess:
    """A recipe run with DRY_RUN=1 (prints its `ray job submit` command instead of running it)."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("WANDB_API_KEY", "RUN_NAME", "PROMPT_DATA")}
    return subprocess.run(
        ["bash", str(SCRIPTS / script), *args],
        env={**full_env, "DRY_RUN": "1", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def dry_run(script: str, *args: str, **env: str) -> list[str]:
    """The `ray job submit ...` command a recipe would run, as a token list."""
    proc = run_recipe(script, *args, **env)
    assert proc.returncode == 0, proc.stderr
    return shlex.split(proc.stdout)


def split_command(tokens: list[str]) -> tuple[list[str], dict, list[str]]:
    """(ray job submit part, runtime env, training flags)."""
    assert tokens[:3] == ["ray", "job", "submit"], tokens[:5]
    sep = tokens.index("--")
    job = tokens[:sep]
    runtime_env = json.loads(job[job.index("--runtime-env-json") + 1])
    assert tokens[sep + 1 : sep + 4] == ["python3", "-m", MODULE]
    return job, runtime_env, tokens[sep + 4 :]


def parse_config(stdout: str) -> dict:
    """The JSON of --print_config (stock validation may print warnings before it)."""
    start = re.search(r"^\{$", stdout, flags=re.MULTILINE)
    assert start, stdout
    return json.loads(stdout[start.start() :])


def resolve(flags: list[str]) -> dict:
    """The configuration as the GPU cluster the recipe is written for resolves it (the CUDA platform,
    whatever this machine has)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), mock.patch.dict(os.environ, {"OPENRLHF_EXT_PLATFORM": "cuda"}):
        main([*flags, "--print_config"])
    return parse_config(out.getvalue())


def test_one_recipe_per_paper_setting():
    assert sorted(p.name for p in SCRIPTS.glob("train_*.sh")) == sorted(EXPECTED)


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_header_states_gpus_and_paper_numbers(script):
    header = (SCRIPTS / script).read_text().split("set -euo pipefail")[0]
    assert re.search(r"^# GPUs: .*\d", header, flags=re.MULTILINE), f"{script}: no '# GPUs: ...' line"
    assert re.search(r"^# Paper.*:", header, flags=re.MULTILINE), f"{script}: no '# Paper ...:' line"
    assert os.access(SCRIPTS / script, os.X_OK)


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_recipe_resolves_to_the_paper_setting(script):
    job, runtime_env, flags = split_command(dry_run(script))
    assert job[job.index("--address") + 1] == "http://127.0.0.1:8265"
    assert runtime_env["working_dir"] == str(REPO)
    assert ".venv" in runtime_env["excludes"] and ".git" in runtime_env["excludes"]

    config = resolve(flags)
    want = EXPECTED[script]
    # The math reward compares with a short answer, never a worked solution.
    assert (config["data"]["input_key"], config["data"]["label_key"]) == ("problem", "answer")
    assert config["algo"]["advantage"]["estimator"] == want["estimator"]
    assert config["rollout"]["n_samples_per_prompt"] == want["n"]
    assert config["actor"]["adam"]["lr"] == want["lr"]
    assert config["algo"]["kl"]["init_coef"] == want["kl"]
    checks = {
        "kl_loss": config["algo"]["kl"]["use_loss"],
        "kl_est": config["algo"]["kl"]["estimator"],
        "prompts": config["rollout"]["batch_size"],
        "train_batch": config["train"]["batch_size"],
        "policy_loss": config["actor"]["policy_loss_type"],
        "loss_agg": config["actor"]["loss_agg_mode"],
        "positive_only": config["ext"]["positive_only"],
        "filter": config["ext"]["filter"],
        "baseline": config["ext"]["baseline"],
        "std_scale": config["ext"]["std_scale"],
        "stats": config["ext"]["stats"],
        "signed_reward": config["ext"]["signed_reward"],
        "loss_norm_tokens": config["ext"]["loss_norm_tokens"],
        "max_new_tokens": config["rollout"]["max_new_tokens"],
        "max_len": config["data"]["max_len"],
        "critic": config["critic"]["model_name_or_path"],
        "critic_lr": config["critic"]["adam"]["lr"],
        "eps_clip": config["actor"]["eps_clip"],
    }
    for key, value in want.items():
        if key in checks:
            assert checks[key] == value, f"{script}: {key} = {checks[key]!r}, paper setting {value!r}"

    # The colocated layout is one the stock launcher accepts (it asserts this at start-up, after
    # --print_config would have returned).
    actor_gpus = config["actor"]["num_nodes"] * config["actor"]["num_gpus_per_node"]
    assert config["vllm"]["num_engines"] * config["vllm"]["tensor_parallel_size"] == actor_gpus == 8
    assert config["train"]["colocate_all"] and config["vllm"]["enable_sleep"]
    assert (config["ref"]["num_nodes"], config["ref"]["num_gpus_per_node"]) == (1, 8)
    # Whole optimiser steps per rollout, and room for a prompt next to the generation budget.
    samples = config["rollout"]["batch_size"] * config["rollout"]["n_samples_per_prompt"]
    assert samples % config["train"]["batch_size"] == 0
    assert config["data"]["max_len"] - config["rollout"]["max_new_tokens"] >= 1024
    # Resumable, with metrics going somewhere.
    run_name = config["logger"]["wandb"]["run_name"]
    assert run_name and "/" not in run_name
    assert config["ckpt"]["load_enable"] is True
    assert config["ckpt"]["path"] == f"/workspace/runs/{run_name}/ckpt"
    assert config["ckpt"]["save_steps"] == 20
    assert config["logger"]["tensorboard_dir"] == "/workspace/runs/tensorboard"


def test_job_runtime_env_merges_with_the_drivers_ray_init():
    """The driver calls ray.init(runtime_env=...) again; Ray refuses a conflicting merge."""
    _, job_env, _ = split_command(dry_run("train_grpo.sh", NCCL_DEBUG="INFO"))
    assert job_env["env_vars"]["NCCL_DEBUG"] == "INFO"
    driver_env = ray_runtime_env({})  # the launcher's own env vars, NCCL_DEBUG among them
    override = job_env["env_vars"].get("RAY_OVERRIDE_JOB_RUNTIME_ENV") == "1"
    merged = _merge_runtime_env(job_env, driver_env, override=override)
    assert merged is not None, "job and driver runtime envs conflict; the job would fail at ray.init"
    assert merged["working_dir"] == str(REPO)
    assert merged["worker_process_setup_hook"] == driver_env["worker_process_setup_hook"]


def test_code_modes_and_layout_from_the_environment():
    _, env, flags = split_command(dry_run("train_grpo.sh", CODE_MODE="py_modules", NNODES="2", GPUS_PER_NODE="4", VLLM_TP="2"))
    assert env["py_modules"] == [str(REPO / "openrlhf_ext")] and "working_dir" not in env
    config = resolve(flags)
    assert (config["actor"]["num_nodes"], config["actor"]["num_gpus_per_node"]) == (2, 4)
    assert (config["vllm"]["num_engines"], config["vllm"]["tensor_parallel_size"]) == (4, 2)

    _, env, _ = split_command(dry_run("train_grpo.sh", CODE_MODE="image"))
    assert set(env) == {"env_vars"}


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CODE_MODE": "zip"}, "CODE_MODE=zip"),
        ({"NNODES": "1", "GPUS_PER_NODE": "6", "VLLM_TP": "4"}, "VLLM_TP=4"),
        ({"HF_ENDPOINT": "http://mirror\n/x"}, "HF_ENDPOINT"),
    ],
)
def test_bad_environment_is_a_clear_error(env, message):
    proc = run_recipe("train_grpo.sh", **env)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_user_flags_data_and_secrets():
    tokens = dry_run("train_reinforce_rej.sh", "--actor.adam.lr", "3e-6", PROMPT_DATA="/data/numina.jsonl",
                     RUN_NAME="rej-try2", WANDB_API_KEY="not-a-real-key-1234")
    assert "not-a-real-key-1234" not in " ".join(tokens)
    _, env, flags = split_command(tokens)
    assert env["env_vars"]["WANDB_API_KEY"] == "<set>"
    config = resolve(flags)
    assert config["actor"]["adam"]["lr"] == 3e-6  # the user's flag comes last and wins
    assert config["data"]["prompt_dataset"] == "/data/numina.jsonl"
    assert config["ckpt"]["path"] == "/workspace/runs/rej-try2/ckpt"
    assert config["logger"]["wandb"]["key"] and config["logger"]["wandb"]["project"] == "openrlhf-ext"


def test_forwarded_values_are_json_escaped():
    tricky = 'http://mirror/a"b\\c d'
    _, env, _ = split_command(dry_run("train_grpo.sh", HF_ENDPOINT=tricky))
    assert env["env_vars"]["HF_ENDPOINT"] == tricky


def test_print_config_through_python_dash_m():
    """The exact entry point a job runs, as a separate process (the other tests call main())."""
    _, _, flags = split_command(dry_run("train_ppo.sh"))
    proc = subprocess.run(
        [sys.executable, "-m", MODULE, *flags, "--print_config"], capture_output=True, text=True, timeout=120, cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    config = parse_config(proc.stdout)
    assert config["algo"]["advantage"]["estimator"] == "gae"
    assert config["critic"]["model_name_or_path"] == "Qwen/Qwen2.5-Math-7B"


def test_gpu_benchmark_flags_parse_under_stock_and_ours(tmp_path):
    """benchmarks/gpu_step_time.py feeds one flag list to both CLIs; keep it valid for both."""
    import importlib.util

    from openrlhf_ext.cli.stock_main import stock_parser

    spec = importlib.util.spec_from_file_location("gpu_step_time", REPO / "benchmarks" / "gpu_step_time.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    flags = bench.common_flags(bench.parse_args([]), "/models/m", tmp_path / "p.jsonl", tmp_path, tmp_path / "tb", "x")
    stock = stock_parser().parse_args([*flags, "--algo.advantage.estimator", "group_norm"])
    assert getattr(stock, "reward.remote_url") == str(REPO / "benchmarks" / "gpu_step_time.py")
    config = resolve([*flags, "--algo.advantage.estimator", "reinforce_rej"])
    assert config["ext"]["filter"] == "both"
    assert config["vllm"]["num_engines"] == config["actor"]["num_gpus_per_node"] == 1
