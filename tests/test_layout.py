"""The CPU layout: one rank per role unless given, printed once; a layout that cannot fit is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from types import SimpleNamespace

from safetensors.torch import load_file

from openrlhf_ext.cli.train_config import resolve_train_config
from openrlhf_ext.cpu.layout import (
    GIB,
    Layout,
    Machine,
    Workload,
    fit_problem,
    laptop_layout,
    memory_needed,
    model_size,
    sized_layout_line,
)

USER_FLAGS = ["--pretrain", "/models/m", "--prompt_data", "/data/p.jsonl", "--input_key", "problem", "--label_key",
              "answer", "--n_samples_per_prompt", "2", "--save_path", "/out"]
LAPTOP = Machine(cores=2, total_bytes=24 * GIB, available_bytes=20 * GIB)


def print_config(flags: list[str], **env: str) -> tuple[dict, str]:
    proc = subprocess.run([sys.executable, "-m", "openrlhf_ext.cli.train_ppo_ray", *flags, "--print_config"],
                          capture_output=True, text=True, timeout=120, env={**os.environ, **env})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout), proc.stderr


def test_laptop_layout_changes_only_what_the_user_did_not_give():
    values = {"actor.num_nodes": 1, "actor.num_gpus_per_node": 8, "ref.num_nodes": 1, "ref.num_gpus_per_node": 8,
              "critic.num_nodes": 2, "critic.num_gpus_per_node": 8, "reward.num_nodes": 1,
              "reward.num_gpus_per_node": 8, "vllm.num_engines": None}
    changes = laptop_layout(values, explicit={"ref.num_gpus_per_node", "critic.num_nodes"})
    assert changes == {"actor.num_gpus_per_node": (8, 1), "critic.num_gpus_per_node": (8, 1),
                       "reward.num_gpus_per_node": (8, 1), "vllm.num_engines": (None, 1)}


def test_a_users_command_gets_one_rank_per_role_said_once():
    """The issue's command, no layout flags: stock GPU defaults (8 + 8 ranks, gae's critic) become one each."""
    config, stderr = print_config(USER_FLAGS, RAY_ADDRESS="local", OPENRLHF_EXT_PLATFORM="")
    assert [config[role]["num_gpus_per_node"] for role in ("actor", "ref", "critic", "reward")] == [1, 1, 1, 1]
    assert config["vllm"]["num_engines"] == 1
    assert config["provenance"]["actor.num_gpus_per_node"] == "cpu"
    assert "num_gpus_per_node" not in stderr  # said by the launch, not on every parse or CLI error

    line = sized_layout_line(resolve_train_config(USER_FLAGS), LAPTOP)
    assert line.startswith("--actor.num_gpus_per_node 1, --ref.num_gpus_per_node 1, --critic.num_gpus_per_node 1, "
                           "--reward.num_gpus_per_node 1, --vllm.num_engines 1 (")
    assert "no GPU: sized to this machine, 2 cores, 20.0 of 24.0 GiB available" in line

    # Given flags win and are not listed; a run on a cluster keeps the stock layout (its cores are not
    # this machine's; the platform comes from its resources, here given by the environment variable).
    config = resolve_train_config([*USER_FLAGS, "--actor_num_gpus_per_node", "2", "--vllm_num_engines", "2"])
    assert (config.actor.num_gpus_per_node, config.vllm.num_engines, config.ref.num_gpus_per_node) == (2, 2, 1)
    assert "--actor.num_gpus_per_node" not in sized_layout_line(config, LAPTOP)
    config, _ = print_config(USER_FLAGS, RAY_ADDRESS="10.9.9.9:6379", OPENRLHF_EXT_PLATFORM="cpu")
    assert config["actor"]["num_gpus_per_node"] == 8 and config["provenance"]["actor.num_gpus_per_node"] == "stock"


def args_for(policy: int, zero_stage: int = 3, critic: bool = False) -> SimpleNamespace:
    def section(n: int) -> SimpleNamespace:
        return SimpleNamespace(num_nodes=1, num_gpus_per_node=n)

    return SimpleNamespace(
        actor=section(policy), ref=section(1), reward=SimpleNamespace(num_nodes=1, num_gpus_per_node=8, remote_url="r.py"),
        critic=SimpleNamespace(num_nodes=1, num_gpus_per_node=1, model_name_or_path="/m" if critic else None),
        algo=SimpleNamespace(kl=SimpleNamespace(init_coef=0.01)), vllm=SimpleNamespace(num_engines=1),
        ds=SimpleNamespace(zero_stage=zero_stage, param_dtype="bf16"),
    )


def test_layout_counts_the_roles_that_run():
    assert Layout.of(args_for(1)) == Layout(policy=1, reference=1, critic=0, reward=0, engines=1)
    assert Layout.of(args_for(2, critic=True)).actors == 2 + 1 + 1 + 1 + 1  # + the trainer


def work(params: int, zero_stage: int = 3, micro_batch_tokens: int = 0) -> Workload:
    return Workload(params=params, vocab=49152, zero_stage=zero_stage, param_dtype="bf16",
                    micro_batch_tokens=micro_batch_tokens)


def test_fit_problem_numbers():
    one = Layout.of(args_for(1))
    assert fit_problem(one, work(135_000_000), LAPTOP) is None
    assert fit_problem(one, None, LAPTOP) is None  # model size unknown: the cores alone decide

    eight = Layout.of(args_for(8))
    fatal = fit_problem(eight, work(135_000_000), LAPTOP)
    assert fatal.fatal and "8 cores (one per rank of a model)" in fatal.message and "2 cores" in fatal.message

    # A 7B model: Adam states alone are 16 bytes/parameter, more than the machine has.
    big = fit_problem(one, work(7_000_000_000), LAPTOP)
    assert big.fatal and "7000M parameters" in big.message
    need = memory_needed(one, work(7_000_000_000))
    assert f"about {need / GIB:.1f} GiB" in big.message and need > 16 * 7e9

    # Above what is available now, below the total: a warning, the run starts.
    short = Machine(cores=2, total_bytes=24 * GIB, available_bytes=3 * GIB)
    warning = fit_problem(one, work(135_000_000), short)
    assert not warning.fatal and "starting anyway" in warning.message


def test_memory_grows_with_zero_replication_and_logits():
    two = Layout(policy=2, reference=0, critic=0, reward=0, engines=0)
    params = 1_000_000_000
    per_stage = {stage: memory_needed(two, work(params, stage)) for stage in (0, 1, 2, 3)}
    base = memory_needed(two, work(0))
    assert per_stage[0] - base == 2 * 16 * params  # every rank holds everything
    assert per_stage[3] - base == 16 * params  # all of it sharded over the 2 ranks
    assert per_stage[0] > per_stage[1] > per_stage[2] > per_stage[3]
    # float32 logits of a micro-batch, 3 copies, in each of the 2 ranks
    assert memory_needed(two, work(0, micro_batch_tokens=1000)) - base == 2 * 3 * 4 * 1000 * 49152


def test_model_size_from_the_config(tiny_model_dir, tmp_path):
    weights = load_file(f"{tiny_model_dir}/model.safetensors")
    tied = {"lm_head.weight"} if "lm_head.weight" not in weights else set()
    params, vocab = model_size(tiny_model_dir)
    assert params == sum(t.numel() for k, t in weights.items() if k not in tied)
    assert vocab == weights["model.embed_tokens.weight"].shape[0]
    (tmp_path / "config.json").write_text('{"model_type": "no_such_architecture"}')
    assert model_size(str(tmp_path)) is None


def test_a_layout_that_cannot_fit_stops_before_ray(tiny_model_dir, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"problem": "1 + 1?", "answer": "2"}\n')
    flags = ["--pretrain", tiny_model_dir, "--prompt_data", str(prompts), "--input_key", "problem", "--label_key",
             "answer", "--n_samples_per_prompt", "2", "--save_path", str(tmp_path / "out"), "--ref.num_gpus_per_node", "64"]
    proc = subprocess.run([sys.executable, "-m", "openrlhf_ext.cli.train_ppo_ray", *flags], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "RAY_ADDRESS": "local"})
    assert proc.returncode == 2, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1 and "needs 64 cores" in errors[0], proc.stderr[-3000:]
    assert "Started a local Ray instance" not in proc.stderr + proc.stdout
