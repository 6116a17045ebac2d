"""Test reward file (OpenRLHF ``reward_func`` protocol): every response is correct, so every prompt group
is all-correct and a filter that drops uniform groups drops the whole rollout."""

import torch


def reward_func(queries, prompts, labels, **_):
    rewards = torch.ones(len(queries))
    return {"rewards": rewards, "scores": rewards, "extra_logs": {}}
