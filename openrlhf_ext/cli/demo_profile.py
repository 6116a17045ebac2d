"""The embedded CPU demo: what a run with no model / data / reward flags trains (the embedded
SmolLM2 on generated problems, scored by the project's math reward) and the profile it runs with."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path
from typing import Any

from openrlhf_ext.job.inputs import EMBEDDED_MODEL, EMBEDDED_PROMPTS

# Defaults for the embedded CPU demo (no --pretrain given): a 2-core machine, about 10 steps in
# under 10 minutes. Any of these given explicitly on the command line wins. Its layout (one rank per
# role) is the laptop layout of openrlhf_ext.cpu.layout.
EMBEDDED_PROFILE: dict[str, Any] = {
    "rollout.n_samples_per_prompt": 4,
    "rollout.batch_size": 8,
    "rollout.micro_batch_size": 8,
    "train.batch_size": 32,
    "train.micro_batch_size": 8,
    "rollout.max_new_tokens": 48,
    "data.max_len": 256,
    "ds.zero_stage": 3,
    "ds.attn_implementation": "sdpa",
    "actor.adam.lr": 1e-5,
    "actor.lr_warmup_ratio": 0.0,
    "ckpt.output_dir": "runs/demo",
    "ext.num_prompts": 80,
    "ext.difficulty": 0,
    "actor.entropy_coef": 0.0,  # 0 = log the policy entropy without adding it to the loss
    # vLLM's rollout log-probs go to the trainer: per-token importance weights against the small
    # vLLM-vs-DeepSpeed numeric gap (tokens whose ratio leaves [0.5, 5] are masked), and the metric
    # vllm_kl, which shows every step that the engine samples from the synced policy.
    "algo.advantage.is_correction_level": "token",
}


def default_reward_file() -> str:
    """The project's math reward, in OpenRLHF's ``--reward.remote_url file.py`` form."""
    package_dir = Path(importlib.util.find_spec("openrlhf_ext.rewards").origin).parent
    return str(package_dir / "math_reward_func.py")


def fill_embedded_defaults(ns: argparse.Namespace, explicit: set[str]) -> set[str]:
    """No model / data / reward flags: train the embedded model on generated problems. Returns the
    dests of the demo profile that were filled in."""
    filled = set()
    if getattr(ns, "actor.model_name_or_path") is None:
        setattr(ns, "actor.model_name_or_path", EMBEDDED_MODEL)
        for dest, value in EMBEDDED_PROFILE.items():
            if dest not in explicit:
                setattr(ns, dest, value)
                filled.add(dest)
    if getattr(ns, "data.prompt_dataset") is None:
        setattr(ns, "data.prompt_dataset", EMBEDDED_PROMPTS)
        if getattr(ns, "ext.template") is None:
            setattr(ns, "ext.template", "chat")
    no_reward = not (
        getattr(ns, "reward.remote_url") or getattr(ns, "reward.model_name_or_path")
        or getattr(ns, "train.agent_func_path")
    )
    if no_reward:
        setattr(ns, "reward.remote_url", default_reward_file())
    return filled
