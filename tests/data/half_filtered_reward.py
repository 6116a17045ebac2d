"""Test reward file (OpenRLHF ``reward_func`` protocol) that makes the filters' work predictable.

Prompts whose label is a multiple of 3: every response gets +1 (an all-correct group, which
Reinforce-Rej drops). Other prompts: +1 and -1 alternate over the calls for the same prompt, so
their groups (an even number of samples) are always mixed, in whatever order vLLM finishes the
samples. A tiny random model cannot solve arithmetic, so the real math reward would score
everything wrong; this file exists so that end-to-end tests train on groups of both kinds.
"""

import itertools
from collections import defaultdict

import torch

_alternate = defaultdict(lambda: itertools.cycle((1.0, -1.0)))


def reward_func(queries, prompts, labels, **_):
    rewards = [1.0 if int(label) % 3 == 0 else next(_alternate[prompt]) for prompt, label in zip(prompts, labels, strict=True)]
    rewards = torch.tensor(rewards)
    return {"rewards": rewards, "scores": rewards, "extra_logs": {}}
