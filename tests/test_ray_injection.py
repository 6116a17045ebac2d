"""Inside Ray workers, the classes that run are ours (issue: foundation, item 4).

OpenRLHF's driver looks its classes up from module attributes; under ``scoped(Where.DRIVER)`` those point at
our subclasses. This test instantiates the actors exactly through those attributes, as
``openrlhf.cli.train_ppo_ray.train`` does, on a local CPU-only Ray, and asks each worker which
classes it is running. The trainer actor is built for real (tokenizer, prompt dataset).
"""

from __future__ import annotations

import openrlhf.cli.train_ppo_ray as stock_cli
import openrlhf.trainer.ppo_trainer as stock_trainer_module
import pytest
from openrlhf.trainer.ray.launcher import RayActorGroup
from openrlhf.utils import get_strategy

from openrlhf_ext.cli.train_config import resolve_train_config
from openrlhf_ext.reaches import Where, rows, scoped

pytestmark = pytest.mark.slow


def test_workers_run_our_classes(local_ray, tiny_model_dir, prompts_file):
    args = resolve_train_config(
        ["--pretrain", tiny_model_dir, "--prompt_data", prompts_file, "--input_key", "problem", "--label_key",
         "answer", "--remote_rm_url", "/unused.py", "--advantage_estimator", "reinforce_rej",
         "--n_samples_per_prompt", "2", "--rollout_batch_size", "4", "--train_batch_size", "8"]
    )
    targets = [reach.target.split(":") for reach in rows(Where.DRIVER)]
    originals = {attr: getattr(__import__(mod, fromlist=[attr]), attr) for mod, attr in targets}

    with scoped(Where.DRIVER):
        policy_group = RayActorGroup(1, 1, stock_cli.PolicyModelActor, num_gpus_per_actor=0)
        trainer = stock_trainer_module.PPOTrainer.options(num_cpus=0).remote(
            args.actor.model_name_or_path, get_strategy(args), policy_group, None, None, None, None,
            do_sample=True, max_len=256, max_new_tokens=32, temperature=1.0, top_p=1.0,
        )
    # The driver is restored afterwards; the workers keep running our code.
    assert {attr: getattr(__import__(mod, fromlist=[attr]), attr) for mod, attr in targets} == originals

    actor_classes = local_ray.get(policy_group.async_run_method("runtime_classes"))[0]
    assert actor_classes["actor"] == "openrlhf_ext.trainer.actors._ExtPolicyModelActor"
    trainer_classes = local_ray.get(trainer.runtime_classes.remote())
    assert trainer_classes == {
        "trainer": "openrlhf_ext.trainer.ppo_trainer._ExtPPOTrainer",
        "experience_maker": "openrlhf_ext.trainer.experience_maker.ExtExperienceMaker",
    }
    assert local_ray.get(trainer.get_max_steps.remote()) == 8 * 2 // 8  # 8 prompts x n=2 / train batch 8
