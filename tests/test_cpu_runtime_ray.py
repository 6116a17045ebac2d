"""The CPU platform layer through real Ray actors: OpenRLHF's own PolicyModelActor on DeepSpeed
ZeRO-3 (gloo) syncing its weights into the CPU generator with OpenRLHF's own ``broadcast_to_vllm``.
"""

from __future__ import annotations

import pytest
import ray
import torch
from openrlhf.trainer.ray.ppo_actor import PolicyModelActor
from openrlhf.utils import get_tokenizer
from vllm import SamplingParams

from openrlhf_ext.cli.args import resolve_train_config
from openrlhf_ext.trainer.cpu import CpuRayActorGroup, create_cpu_generators, install_driver_patches

pytestmark = pytest.mark.slow

EOS = 2


def stock_args(model: str):
    return resolve_train_config([
        "--actor.model_name_or_path", model, "--algo.advantage.estimator", "group_norm",
        "--rollout.n_samples_per_prompt", "2", "--rollout.batch_size", "2", "--train.batch_size", "4",
        "--train.micro_batch_size", "2", "--ds.zero_stage", "3", "--actor.num_gpus_per_node", "1",
        "--vllm.num_engines", "1", "--algo.kl.init_coef", "0",
    ])  # fmt: skip


def test_zero3_policy_weights_reach_the_generator(local_ray, tiny_model_dir):
    import openrlhf.utils

    install_driver_patches()
    args = stock_args(tiny_model_dir)
    strategy = openrlhf.utils.get_strategy(args)  # patched: adapts args, checks the worker hook
    assert args.vllm.sync_backend == "gloo" and args.ds.attn_implementation == "sdpa"

    engines = create_cpu_generators(1, 1, tiny_model_dir, 7, False, False, False, 256)
    policy = CpuRayActorGroup(1, 1, PolicyModelActor)
    ray.get(policy.async_init_model_from_pretrained(strategy, tiny_model_dir, 4, engines))
    actor = policy._actor_handlers[0]
    engine = engines[0]
    try:
        # generation through the Ray actor, OpenRLHF's single-turn executor on top
        tokenizer = get_tokenizer(tiny_model_dir, None, "left", strategy)
        params = SamplingParams(temperature=1.0, top_p=1.0, max_tokens=5, min_tokens=1)
        samples = ray.get(engine.generate_responses.remote("What is 1 + 1?", "2", params, 64, tokenizer, num_samples=4))
        prompt_len = len(tokenizer("What is 1 + 1?", add_special_tokens=False)["input_ids"])
        assert len(samples) == 4
        for sample in samples:
            (start, end), = sample["action_ranges"]
            assert start == prompt_len and end == len(sample["observation_tokens"]) and 1 <= end - start <= 5
            assert sample["truncated"] == (end - start == 5 and sample["observation_tokens"][-1] != EOS)

        def perturb(self):  # runs inside the policy actor
            import deepspeed

            params = list(self.actor.model.module.parameters())
            with deepspeed.zero.GatheredParameters(params, modifier_rank=0), torch.no_grad():
                for i, p in enumerate(params):
                    p.add_(0.01 * (i + 1))

        def gathered_weights(self):
            import deepspeed

            model = self.actor.model.module
            with deepspeed.zero.GatheredParameters(list(model.parameters())):
                return {name: p.detach().clone() for name, p in model.named_parameters()}

        before = ray.get(engine.get_state_dict.remote())
        ray.get(actor.__ray_call__.remote(perturb))
        policy_weights = ray.get(actor.__ray_call__.remote(gathered_weights))
        assert set(policy_weights) == set(before)
        assert not any(torch.equal(before[n], w) for n, w in policy_weights.items())

        ray.get(policy.async_run_method("broadcast_to_vllm"))

        after = ray.get(engine.get_state_dict.remote())
        for name, weight in policy_weights.items():
            assert after[name].dtype == weight.dtype == torch.bfloat16
            assert torch.equal(after[name], weight), name
        # the generator still generates with the new weights
        out = ray.get(engine.generate.remote([1, 2, 3], SamplingParams(temperature=0.0, max_tokens=3)))
        assert 1 <= len(out.outputs[0].token_ids) <= 3
    finally:
        for handle in (actor, engine):
            ray.kill(handle)
