"""The CPU platform layer without Ray: generator pieces, weight-sync group, argument and resource
rewriting, worker patches. The Ray + DeepSpeed path is in test_cpu_runtime_ray.py (slow)."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
import sys
import threading

import pytest
import torch
from helpers import free_port
from openrlhf.utils.config import hierarchize
from vllm import SamplingParams

from openrlhf_ext.cli.args import stock_parser
from openrlhf_ext.trainer.cpu.driver import CPU_PER_BUNDLE, adapt_args_for_cpu, cpu_bundles
from openrlhf_ext.trainer.cpu.generator import (
    CpuRolloutActor,
    cut_completion,
    left_pad,
    sampling_key,
    token_logprobs,
)
from openrlhf_ext.trainer.cpu.weight_sync import GlooBroadcastGroup, copy_into_parameter

EOS = 2

# ---- pure pieces of the generator ---------------------------------------------------------------


def test_cut_completion_stops_at_first_eos_inclusive():
    assert cut_completion([5, 6, EOS, 7, EOS], {EOS}, budget=10) == ([5, 6, EOS], "stop")


def test_cut_completion_applies_the_request_budget():
    assert cut_completion([5, 6, 7, EOS], {EOS}, budget=3) == ([5, 6, 7], "length")
    assert cut_completion([5, 6, 7], {EOS}, budget=3) == ([5, 6, 7], "length")
    assert cut_completion([EOS, 5], {EOS, 9}, budget=1) == ([EOS], "stop")
    assert cut_completion([9, 5], {EOS, 9}, budget=4) == ([9], "stop")
    with pytest.raises(ValueError):
        cut_completion([5], {EOS}, budget=0)


def test_left_pad():
    ids, mask = left_pad([[7, 8, 9], [4]], pad_id=0)
    assert ids.tolist() == [[7, 8, 9], [0, 0, 4]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError):
        left_pad([[1], []], pad_id=0)


def test_token_logprobs_by_hand():
    # logits (0, ln 3): softmax (1/4, 3/4); at temperature 2: (1, sqrt 3) / (1 + sqrt 3)
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, math.log(3.0)]])
    tokens = torch.tensor([1, 0])
    assert token_logprobs(logits, tokens, 1.0).tolist() == pytest.approx([math.log(0.75), math.log(0.25)])
    s3 = math.sqrt(3.0)
    assert token_logprobs(logits, tokens, 2.0).tolist() == pytest.approx([math.log(s3 / (1 + s3)), math.log(1 / (1 + s3))])
    # greedy (temperature 0) reports the unscaled distribution
    assert token_logprobs(logits, tokens, 0.0).tolist() == pytest.approx([math.log(0.75), math.log(0.25)])


def test_sampling_key_groups_only_compatible_requests():
    base = SamplingParams(temperature=1.0, top_p=0.9, max_tokens=8)
    assert sampling_key(base) == sampling_key(SamplingParams(temperature=1.0, top_p=0.9, max_tokens=32))
    assert sampling_key(base) != sampling_key(SamplingParams(temperature=0.6, top_p=0.9, max_tokens=8))
    assert sampling_key(base) != sampling_key(SamplingParams(temperature=1.0, top_p=0.9, max_tokens=8, logprobs=1))


# ---- the generator on a real (tiny) model, in-process -------------------------------------------

REWARD = '''
import torch

def reward_func(queries, prompts, labels):
    # characters the response added to the prompt, and the label echoed as score
    rewards = torch.tensor([float(len(q) - len(p)) for q, p in zip(queries, prompts)])
    return {"rewards": rewards, "scores": torch.tensor([float(l) for l in labels]), "extra_logs": {}}
'''


@pytest.fixture(scope="module")
def generator(tiny_model_dir, tmp_path_factory):
    reward = tmp_path_factory.mktemp("reward") / "reward.py"
    reward.write_text(REWARD)
    return CpuRolloutActor(
        tiny_model_dir, seed=0, remote_rm_url=[str(reward)], logprobs_mode="processed_logprobs", dtype=torch.float32
    )


def test_generate_responses_has_openrlhf_shape_and_calls_the_reward(generator):
    tokenizer = generator.tokenizer
    prompts = ["<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n", "Count: one two"]
    params = SamplingParams(temperature=1.0, top_p=1.0, max_tokens=6, min_tokens=1)

    async def run():
        return await asyncio.gather(
            *(generator.generate_responses(p, str(i), params, 128, tokenizer, num_samples=3) for i, p in enumerate(prompts))
        )

    results = asyncio.run(run())
    assert [len(r) for r in results] == [3, 3]
    for i, (prompt, samples) in enumerate(zip(prompts, results, strict=True)):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        for out in samples:
            obs = out["observation_tokens"]
            action = obs[len(prompt_ids) :]
            assert obs[: len(prompt_ids)] == prompt_ids
            assert out["action_ranges"] == [(len(prompt_ids), len(obs))]
            assert 1 <= len(action) <= 6
            assert out["truncated"] == (len(action) == 6 and EOS not in action)
            assert EOS not in action[:-1]
            assert out["prompt"] == prompt and out["label"] == str(i) and out["rollout_log_probs"] is None
            assert out["reward"].item() == len(tokenizer.decode(obs)) - len(prompt)
            assert out["scores"].item() == i
    assert asyncio.run(generator.get_num_unfinished_requests()) == 0


def test_concurrent_requests_keep_their_own_budgets(generator):
    prompt = generator.tokenizer("Once upon a time", add_special_tokens=False)["input_ids"]

    async def run():
        return await asyncio.gather(
            *(generator.generate(prompt, SamplingParams(temperature=1.0, max_tokens=b)) for b in (1, 3, 8))
        )

    for budget, result in zip((1, 3, 8), asyncio.run(run()), strict=True):
        out = result.outputs[0]
        assert len(out.token_ids) == budget if out.finish_reason == "length" else out.token_ids[-1] == EOS
        assert len(out.token_ids) <= budget


@pytest.mark.parametrize("temperature", [0.0, 2.0])
def test_rollout_logprobs_are_aligned_with_the_sampled_tokens(generator, temperature):
    prompt = generator.tokenizer("The answer is", add_special_tokens=False)["input_ids"]
    params = SamplingParams(temperature=temperature, max_tokens=6, logprobs=1)
    out = asyncio.run(generator.generate(prompt, params)).outputs[0]
    assert len(out.logprobs) == len(out.token_ids)
    with torch.no_grad():
        logits = generator.model(input_ids=torch.tensor([prompt + out.token_ids])).logits[0].float()
    scale = temperature if temperature > 0 else 1.0
    expected = torch.log_softmax(logits / scale, dim=-1)
    for t, (token, entry) in enumerate(zip(out.token_ids, out.logprobs, strict=True)):
        row = expected[len(prompt) - 1 + t]
        assert entry[token].logprob == pytest.approx(row[token].item(), abs=1e-4)
        if temperature == 0.0:  # greedy: the generated token is the most likely one
            assert row[token].item() == pytest.approx(row.max().item(), abs=1e-4)


def test_generator_refuses_what_it_cannot_do(generator):
    prompt = [1, 2, 3]
    with pytest.raises(NotImplementedError):
        asyncio.run(generator.generate(prompt, SamplingParams(max_tokens=2), multi_modal_data={"image": [1]}))
    with pytest.raises(ValueError):
        asyncio.run(generator.generate(prompt, SamplingParams(max_tokens=0)))
    with pytest.raises(RuntimeError):
        asyncio.run(generator.update_weight("model.norm.weight", torch.float32, (64,)))


# ---- weight-sync group ---------------------------------------------------------------------------


def test_gloo_group_broadcasts_into_the_named_parameter():
    """Rank 0 plays the policy, rank 1 the generator, each on its own thread and group object."""
    port = free_port()
    sent = {"w": torch.arange(6, dtype=torch.bfloat16).reshape(2, 3) * 0.5, "b": torch.tensor([1.5, -2.0])}
    receiver = torch.nn.Linear(3, 2).to(torch.bfloat16)
    params = {"w": receiver.weight, "b": receiver.bias}
    errors = []

    def rank(r: int) -> None:
        try:
            group = GlooBroadcastGroup("127.0.0.1", port, r, 2)
            for name, value in sent.items():
                buffer = value.clone() if r == 0 else torch.empty(value.shape, dtype=value.dtype)
                group.broadcast(buffer, src=0, stream=None)
                if r == 1:
                    copy_into_parameter(params, name, buffer)
        except Exception as err:  # noqa: BLE001  (re-raised in the test thread)
            errors.append(err)

    threads = [threading.Thread(target=rank, args=(r,)) for r in (0, 1)]
    [t.start() for t in threads]
    [t.join(timeout=60) for t in threads]
    assert not errors
    assert torch.equal(receiver.weight, sent["w"])
    assert torch.equal(receiver.bias.float(), torch.tensor([1.5, -2.0]))  # cast to the parameter's dtype


def test_copy_into_parameter_refuses_unknown_names_and_shapes():
    params = {"w": torch.nn.Parameter(torch.zeros(2, 3))}
    with pytest.raises(KeyError):
        copy_into_parameter(params, "lm_head.weight", torch.zeros(2, 3))
    with pytest.raises(ValueError):
        copy_into_parameter(params, "w", torch.zeros(3, 2))
    with pytest.raises(ValueError):
        GlooBroadcastGroup("127.0.0.1", 1, rank=2, world_size=2)


# ---- driver side: arguments and resources --------------------------------------------------------


def stock_defaults(*argv: str):
    return hierarchize(stock_parser().parse_args(list(argv)))


def test_adapt_args_rewrites_cuda_only_defaults_once():
    args = stock_defaults()
    changes = adapt_args_for_cpu(args)
    assert args.ds.attn_implementation == "sdpa"
    assert args.vllm.num_engines == 1 and args.vllm.sync_backend == "gloo" and args.vllm.sync_with_ray is False
    assert len(changes) == 3  # attention, engines, sync backend
    assert adapt_args_for_cpu(args) == []

    explicit = stock_defaults("--ds.attn_implementation", "eager", "--vllm.num_engines", "2")
    adapt_args_for_cpu(explicit)
    assert explicit.ds.attn_implementation == "eager" and explicit.vllm.num_engines == 2


@pytest.mark.parametrize("flag", ["--ds.packing_samples", "--train.enable_ema", "--ds.use_liger_kernel"])
def test_adapt_args_refuses_cuda_only_features(flag):
    with pytest.raises(ValueError, match=flag):
        adapt_args_for_cpu(stock_defaults(flag))


def test_cpu_bundles_drop_gpus_and_keep_custom_resources():
    assert cpu_bundles([{"GPU": 1, "CPU": 1}, {"GPU": 1, "CPU": 1, "node:x": 2}]) == [
        {"CPU": CPU_PER_BUNDLE},
        {"node:x": 2, "CPU": CPU_PER_BUNDLE},
    ]


# ---- worker side ---------------------------------------------------------------------------------

WORKER_CHECK = """
import sys, torch
from openrlhf_ext.trainer.cpu import apply_worker_patches
now = apply_worker_patches()
assert now == ["torch.cuda:current_device", "torch.cuda:set_device", "torch.cuda:synchronize",
               "torch.cuda:current_stream"], now
assert "deepspeed" not in sys.modules  # OpenRLHF patches wait for their modules
assert torch.cuda.current_device() == torch.device("cpu") and torch.tensor([1]).to(torch.cuda.current_device()).is_cpu
torch.cuda.set_device(0); torch.cuda.synchronize(); assert torch.cuda.current_stream() is None
from openrlhf.trainer.ray import ppo_actor
from openrlhf.trainer.ppo_utils.replay_buffer import NaiveReplayBuffer
from openrlhf.utils.deepspeed import deepspeed as ds
from openrlhf_ext.trainer.cpu.weight_sync import stateless_gloo_group
assert ppo_actor.stateless_init_process_group is stateless_gloo_group
assert NaiveReplayBuffer(4).target_device == torch.device("cpu")
from openrlhf_ext.trainer.cpu.patching import is_patched
assert is_patched("openrlhf.utils.deepspeed.deepspeed:init_device_mesh")
torch.distributed.init_process_group("gloo", init_method="tcp://127.0.0.1:%d", rank=0, world_size=1)
mesh = ds.init_device_mesh("cuda", (1, 1, 1), mesh_dim_names=("dp", "sp", "tp"))  # as DeepspeedStrategy does
assert mesh.device_type == "cpu"
assert apply_worker_patches() == []
print("ok", torch.get_num_threads())
"""


def test_worker_patches_in_a_fresh_process():
    result = subprocess.run(
        [sys.executable, "-c", WORKER_CHECK % free_port()],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OPENRLHF_EXT_CPU_THREADS": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-2:] == ["ok", "2"]


def test_torch_extensions_cache_is_per_environment(monkeypatch, tmp_path):
    from openrlhf_ext.trainer.cpu.worker import cpu_worker_env, torch_extensions_dir

    monkeypatch.setenv("OPENRLHF_EXT_CACHE", str(tmp_path))
    monkeypatch.setattr(sys, "prefix", "/venv/a")
    first = torch_extensions_dir()
    monkeypatch.setattr(sys, "prefix", "/venv/b")
    second = torch_extensions_dir()
    assert first != second
    assert all(d.startswith(str(tmp_path / "torch_extensions")) for d in (first, second))
    assert cpu_worker_env() == {"DS_ACCELERATOR": "cpu", "TORCH_EXTENSIONS_DIR": second}


def test_runtime_env_carries_the_hook_and_leaves_out_what_the_job_already_sets(monkeypatch):
    from openrlhf_ext.trainer.cpu import SETUP_HOOK, cpu_runtime_env

    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")  # as if set by the job's runtime env
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    env = cpu_runtime_env({"EXTRA": "x"})
    assert env["worker_process_setup_hook"] == SETUP_HOOK == "openrlhf_ext.trainer.cpu.apply_worker_patches"
    assert "TOKENIZERS_PARALLELISM" not in env["env_vars"]
    assert env["env_vars"]["DS_ACCELERATOR"] == "cpu" and env["env_vars"]["EXTRA"] == "x"
