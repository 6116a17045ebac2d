"""OpenRLHF reward file: pass this file's path as ``--reward.remote_url`` (docs/rewards.md).

OpenRLHF 0.11.2 (``openrlhf.utils.agent.SingleTurnAgentExecutor``) loads it by path inside each vLLM
engine actor and calls ``reward_func(queries, prompts, labels)`` from ``asyncio.to_thread``, where a
query is the decoded prompt + response. Settings come from ``OPENRLHF_EXT_REWARD_*`` environment
variables (:class:`openrlhf_ext.rewards.config.RewardConfig`), read on every call.

Returned dict (the keys OpenRLHF reads):

* ``rewards``: float tensor [B], the shaped reward used for advantages;
* ``scores``: float tensor [B], 1.0 for a correct answer else 0.0 (OpenRLHF's dynamic filtering
  compares scores with a 0..1 range, whatever the reward's sign convention);
* ``extra_logs``: per-sample tensors ``reward_correct``, ``reward_format_error``, ``reward_timed_out``,
  ``reward_error``, ``reward_latency_s`` (OpenRLHF copies them into each experience's ``info``; feed
  them to :func:`openrlhf_ext.rewards.scoring.summarize_logs` for the per-step rates, counts and
  percentiles).
"""

from __future__ import annotations

from collections.abc import Sequence

from openrlhf_ext.rewards.config import RewardConfig
from openrlhf_ext.rewards.scoring import score_queries


def reward_func(queries: Sequence[str], prompts: Sequence[str], labels: Sequence[object], **_: object) -> dict:
    """OpenRLHF's ``reward_func`` protocol (see module docstring)."""
    import torch  # the caller (an OpenRLHF actor) has torch loaded; the scoring workers do not need it

    answer = score_queries(queries, prompts, labels, RewardConfig.from_env())

    def tensor(values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32)

    return {
        "rewards": tensor(answer["rewards"]),
        "scores": tensor(answer["scores"]),
        "extra_logs": {key: tensor(values) for key, values in answer["extra_logs"].items()},
    }
