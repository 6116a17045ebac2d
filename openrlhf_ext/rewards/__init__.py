"""Verifiable math rewards that never hang (docs/rewards.md).

* :data:`REWARD_FUNC_PATH`: the file to pass as OpenRLHF's ``--reward.remote_url``;
* :class:`RewardConfig`: settings and their ``OPENRLHF_EXT_REWARD_*`` environment form;
* :func:`score_responses` / :func:`summarize` / :func:`summarize_logs`: the scoring API and the
  per-step statistics (from results or from the per-sample ``extra_logs``);
* ``python -m openrlhf_ext.rewards.server``: the same reward as an HTTP reward-model server.

Importing this package loads neither math-verify nor torch; only the scoring workers load math-verify.
"""

from pathlib import Path

from openrlhf_ext.rewards.config import RewardConfig, signed_reward_off_effect
from openrlhf_ext.rewards.extract import Extraction, extract_answer, response_from_query
from openrlhf_ext.rewards.pool import ScoringPool, WorkerStartError, shared_pool
from openrlhf_ext.rewards.scoring import (
    RewardStats,
    ScoreBatch,
    ScoreResult,
    percentile,
    reward_value,
    score_responses,
    summarize,
    summarize_logs,
)

REWARD_FUNC_PATH = str(Path(__file__).with_name("math_reward_func.py"))

__all__ = [
    "REWARD_FUNC_PATH",
    "Extraction",
    "RewardConfig",
    "RewardStats",
    "ScoreBatch",
    "ScoreResult",
    "ScoringPool",
    "WorkerStartError",
    "extract_answer",
    "percentile",
    "response_from_query",
    "reward_value",
    "score_responses",
    "shared_pool",
    "signed_reward_off_effect",
    "summarize",
    "summarize_logs",
]
