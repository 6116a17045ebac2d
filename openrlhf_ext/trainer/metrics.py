"""Per-step rollout metrics (docs/algorithms.md, "Metrics") the advantage stage does not produce (pure functions)."""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

# Dr. GRPO (arXiv:2503.20783) App. C: the self-reflection keywords whose frequency the paper tracks.
REFLECTION_KEYWORDS = (
    "recheck", "rethink", "reassess", "reevaluate", "re-evaluate", "reevaluation", "re-examine", "reexamine",
    "reconsider", "reanalyze", "double-check", "check again", "think again", "verify again", "go over the steps",
)
_REFLECTION_RE = re.compile("|".join(re.escape(k) for k in REFLECTION_KEYWORDS), re.IGNORECASE)


def reflection_rate(responses: Sequence[str]) -> float:
    """Fraction of responses containing at least one reflection keyword (Dr. GRPO App. C)."""
    if not responses:
        return 0.0
    return sum(1 for text in responses if _REFLECTION_RE.search(text)) / len(responses)


def _mean_or_nan(values: torch.Tensor) -> float:
    return values.float().mean().item() if values.numel() else float("nan")


def rollout_metrics(rewards: torch.Tensor, response_lengths: torch.Tensor, correct_threshold: float) -> dict[str, float]:
    """Reward mean and response length overall / of correct / of wrong responses (Dr. GRPO, arXiv:2503.20783, Fig. 6).

    A length of a class with no member is NaN (logged as such, not as a misleading 0).
    """
    rewards = rewards.reshape(-1).float()
    lengths = response_lengths.reshape(-1).float()
    correct = rewards > correct_threshold
    return {
        "reward_mean": _mean_or_nan(rewards),
        "correct_fraction": _mean_or_nan(correct),
        "response_length": _mean_or_nan(lengths),
        "response_length_correct": _mean_or_nan(lengths[correct]),
        "response_length_wrong": _mean_or_nan(lengths[~correct]),
    }
