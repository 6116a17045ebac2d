"""Scoring API: responses + labels -> rewards and per-step statistics (docs/rewards.md).

:func:`score_responses` is what the reward file, the HTTP server and the trainer call. It judges every
response in the scoring worker pool (hard time limit, see :mod:`openrlhf_ext.rewards.pool`) and turns
the verdicts into rewards with :func:`reward_value`. :func:`summarize` gives the per-step numbers the
trainer logs: reward mean, accuracy, format-error rate, timeout count, scoring latency p50/p99.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from openrlhf_ext.rewards.config import RewardConfig
from openrlhf_ext.rewards.extract import response_from_query
from openrlhf_ext.rewards.pool import ScoringPool, shared_pool


@dataclass(frozen=True)
class ScoreResult:
    """One scored response. ``reward`` is what the policy gradient sees; ``correct`` is the 0/1 outcome."""

    reward: float
    correct: bool
    format_error: bool
    timed_out: bool
    latency_s: float
    method: str
    answer: str | None
    error: str | None


@dataclass(frozen=True)
class RewardStats:
    """Per-step reward statistics."""

    n: int
    reward_mean: float
    accuracy: float
    format_error_rate: float
    timeout_count: int
    error_count: int
    latency_p50_s: float
    latency_p99_s: float

    def as_log_dict(self, prefix: str = "reward/") -> dict[str, float]:
        return {prefix + k: float(v) for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class ScoreBatch:
    """Scores of a batch, in input order."""

    results: list[ScoreResult]

    @property
    def rewards(self) -> list[float]:
        return [r.reward for r in self.results]

    @property
    def correct(self) -> list[float]:
        return [1.0 if r.correct else 0.0 for r in self.results]

    def per_sample_logs(self) -> dict[str, list[float]]:
        """Per-sample values for OpenRLHF's ``extra_logs`` (reward file and HTTP server alike)."""
        return {
            "reward_correct": self.correct,
            "reward_format_error": [float(r.format_error) for r in self.results],
            "reward_timed_out": [float(r.timed_out) for r in self.results],
            "reward_error": [float(r.error is not None and not r.timed_out) for r in self.results],
            "reward_latency_s": [r.latency_s for r in self.results],
        }

    def stats(self) -> RewardStats:
        return summarize_logs(self.rewards, self.per_sample_logs())


def reward_value(correct: bool, format_ok: bool, signed: bool, format_coef: float) -> float:
    """Outcome reward (docs/rewards.md): ``1`` if correct else ``0`` (``-1`` when ``signed``), minus
    ``format_coef`` when the response is badly formatted.

    The format term is a penalty rather than a bonus so that ``reward > 0`` still means "correct" for
    any ``format_coef < 1`` (the filters of docs/algorithms.md §1 use ``correct_threshold = 0``): a correct answer
    scores ``1 - c > 0``, a wrong one ``0`` or ``-c`` (signed: ``-1`` or ``-1 - c``).
    """
    base = 1.0 if correct else (-1.0 if signed else 0.0)
    return base - (0.0 if format_ok else format_coef)


def percentile(values: Sequence[float], q: float) -> float:
    """``q``-th percentile (0..100) with linear interpolation between order statistics (numpy's default);
    NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize(
    rewards: Sequence[float],
    correct: Sequence[bool],
    format_errors: Sequence[bool],
    timed_out: Sequence[bool],
    errors: Sequence[bool],
    latencies_s: Sequence[float],
) -> RewardStats:
    """Per-step statistics from per-sample values (e.g. gathered from OpenRLHF's experience ``info``)."""
    n = len(rewards)
    if not all(len(x) == n for x in (correct, format_errors, timed_out, errors, latencies_s)):
        raise ValueError("summarize: all per-sample sequences must have the same length")

    def mean(xs: Sequence[float]) -> float:
        return sum(xs) / n if n else math.nan

    return RewardStats(
        n=n,
        reward_mean=mean(rewards),
        accuracy=mean([float(c) for c in correct]),
        format_error_rate=mean([float(f) for f in format_errors]),
        timeout_count=sum(bool(t) for t in timed_out),
        error_count=sum(bool(e) for e in errors),
        latency_p50_s=percentile(latencies_s, 50),
        latency_p99_s=percentile(latencies_s, 99),
    )


def summarize_logs(rewards: Sequence[float], logs: Mapping[str, Sequence[float]]) -> RewardStats:
    """:func:`summarize` from the per-sample ``extra_logs`` of the reward file / server, e.g. the
    ``info`` values OpenRLHF gathered for one step's experiences."""
    return summarize(
        rewards=rewards,
        correct=[bool(x) for x in logs["reward_correct"]],
        format_errors=[bool(x) for x in logs["reward_format_error"]],
        timed_out=[bool(x) for x in logs["reward_timed_out"]],
        errors=[bool(x) for x in logs["reward_error"]],
        latencies_s=list(logs["reward_latency_s"]),
    )


def _as_text(value: object) -> str:
    # Model output reaches us as str, but an HTTP client or a tokenizer bug can hand over bytes with
    # invalid UTF-8: score what can be decoded instead of raising.
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", errors="replace")
    return "" if value is None else str(value)


def score_responses(
    responses: Sequence[str | bytes],
    labels: Sequence[object],
    config: RewardConfig | None = None,
    pool: ScoringPool | None = None,
) -> ScoreBatch:
    """Score ``responses`` (model outputs, prompt removed) against reference ``labels``.

    Uses ``pool`` or the process-wide pool with ``config.workers`` workers. Never raises on any
    content of ``responses``; a length mismatch is a caller bug and raises ``ValueError``.
    """
    config = config or RewardConfig()
    if len(responses) != len(labels):
        raise ValueError(f"{len(responses)} responses but {len(labels)} labels")
    pool = pool or shared_pool(config.workers)
    outcomes = pool.judge_many(
        [_as_text(r) for r in responses],
        [_as_text(lab) for lab in labels],
        config.template,
        config.fallback,
        config.timeout_s,
        config.strict,
    )
    return ScoreBatch(
        [
            ScoreResult(
                reward=reward_value(o.verdict.correct, o.verdict.format_ok, config.signed, config.format_coef),
                correct=o.verdict.correct,
                format_error=not o.verdict.format_ok,
                timed_out=o.timed_out,
                latency_s=o.latency_s,
                method=o.verdict.method,
                answer=o.verdict.answer,
                error=o.verdict.error,
            )
            for o in outcomes
        ]
    )


def score_queries(
    queries: Sequence[str],
    prompts: Sequence[str],
    labels: Sequence[object],
    config: RewardConfig | None = None,
    pool: ScoringPool | None = None,
) -> dict[str, Any]:
    """OpenRLHF's reward answer for decoded prompt + response ``queries``: ``rewards``, ``scores`` and
    ``extra_logs`` as lists (the reward file makes tensors of them, the HTTP server sends them as JSON)."""
    responses = [response_from_query(q, p) for q, p in zip(queries, prompts, strict=True)]
    batch = score_responses(responses, labels, config, pool=pool)
    return {"rewards": batch.rewards, "scores": batch.correct, "extra_logs": batch.per_sample_logs()}
