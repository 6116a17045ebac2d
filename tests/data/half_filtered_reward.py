"""Test reward file (OpenRLHF ``reward_func`` protocol) that makes the filters' work predictable.

Prompts whose label is even: every response gets +1 (an all-correct group, which Reinforce-Rej
drops). Other prompts: +1 or -1 from a hash of the response text (mixed groups, most of the time).
A tiny random model cannot solve arithmetic, so the real math reward would score everything wrong;
this file exists so end-to-end tests train on groups of every kind.
"""

import zlib

import torch


def reward_func(queries, prompts, labels, **_):
    rewards = []
    for query, label in zip(queries, labels, strict=True):
        if int(label) % 2 == 0:
            rewards.append(1.0)
        else:
            rewards.append(1.0 if zlib.crc32(query.encode()) % 2 else -1.0)
    rewards = torch.tensor(rewards)
    return {"rewards": rewards, "scores": rewards, "extra_logs": {}}
