"""The record a judgement produces; kept apart from :mod:`judge` so the parent process of the scoring
workers never imports math-verify / sympy."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    """Outcome of judging one response.

    ``method`` is the extraction rule that found the answer (see :mod:`openrlhf_ext.rewards.extract`).
    ``error`` says why a response was judged wrong without a full comparison: ``answer_too_long``,
    ``answer_too_deep``, ``exception:<Type>``, ``timeout`` or ``crash``; ``None`` otherwise.
    """

    correct: bool
    format_ok: bool
    method: str
    answer: str | None
    error: str | None = None
