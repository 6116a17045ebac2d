"""Reward settings and their environment-variable form.

OpenRLHF loads a ``--reward.remote_url file.py`` by path inside its Ray actors, so the reward file
cannot take arguments: it reads :class:`RewardConfig` from the environment. The CLI maps its flags
(``--ext.signed_reward``, ``--ext.format_reward_coef``, ``--ext.reward_timeout``, ``--ext.template``,
``--ext.reward_fallback``, ``--ext.strict_format``)
to :meth:`RewardConfig.to_env` and exports the result (also in Ray's ``runtime_env`` so actors on other
nodes see it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from openrlhf_ext.data.templates import TEMPLATE_NAMES

ENV_PREFIX = "OPENRLHF_EXT_REWARD_"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


@dataclass(frozen=True)
class RewardConfig:
    """Settings of the math reward (docs/rewards.md).

    Attributes (environment variable in brackets):
        signed: reward +1 / -1 instead of 1 / 0 [``OPENRLHF_EXT_REWARD_SIGNED``].
        format_coef: penalty subtracted when the response is badly formatted, in [0, 1)
            [``OPENRLHF_EXT_REWARD_FORMAT_COEF``]; see :func:`openrlhf_ext.rewards.scoring.reward_value`.
        timeout_s: hard wall-clock limit of one scoring call, seconds [``OPENRLHF_EXT_REWARD_TIMEOUT``].
        template: prompt template the responses answer (a name of
            :data:`openrlhf_ext.data.templates.TEMPLATES`) or ``None`` (lenient format check)
            [``OPENRLHF_EXT_REWARD_TEMPLATE``].
        workers: scoring worker processes per reward-calling process [``OPENRLHF_EXT_REWARD_WORKERS``].
        fallback: use the last-number fallback extraction [``OPENRLHF_EXT_REWARD_FALLBACK``].
        strict: Dr. GRPO's strict reward (sail-sg/understand-r1-zero ``math_grader.py``): only the
            template's own answer form scores, ``</think> <answer>...</answer>`` under ``r1`` and
            ``\\boxed{}`` under any other template; no fallback [``OPENRLHF_EXT_REWARD_STRICT``].
    """

    signed: bool = False
    format_coef: float = 0.0
    timeout_s: float = 5.0
    template: str | None = None
    workers: int = 2
    fallback: bool = True
    strict: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= self.format_coef < 1.0:
            # A penalty of 1 or more would make a correct but badly formatted answer score <= 0 and
            # break "correct iff reward > 0", which the advantage filters rely on (docs/algorithms.md §1).
            raise ValueError(f"format_coef must be in [0, 1), got {self.format_coef}")
        if not self.timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if self.template is not None and self.template not in TEMPLATE_NAMES:
            raise ValueError(f"template must be one of {TEMPLATE_NAMES} or None, got {self.template!r}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")

    def to_env(self) -> dict[str, str]:
        """The environment variables that make :meth:`from_env` return this config."""
        env = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool):
                text = "1" if value else "0"
            elif value is None:
                text = ""
            else:
                text = str(value)
            env[ENV_PREFIX + _ENV_NAMES[f.name]] = text
        return env

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RewardConfig:
        """Read the config from ``environ`` (default ``os.environ``); unset variables keep defaults."""
        environ = os.environ if environ is None else environ
        kwargs: dict[str, object] = {}
        for f in fields(cls):
            name = ENV_PREFIX + _ENV_NAMES[f.name]
            if name not in environ:
                continue
            raw = environ[name].strip()
            try:
                kwargs[f.name] = _PARSERS[f.name](raw)
            except ValueError as exc:
                raise ValueError(f"{name}={environ[name]!r}: {exc}") from exc
        try:
            return cls(**kwargs)
        except ValueError as exc:
            raise ValueError(f"invalid reward settings from the environment: {exc}") from exc


def _parse_bool(raw: str) -> bool:
    low = raw.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError("expected 1/0, true/false, yes/no or on/off")


def _parse_fallback(raw: str) -> bool:
    low = raw.lower()
    if low == "last_number":
        return True
    if low == "none":
        return False
    return _parse_bool(raw)


_ENV_NAMES = {
    "signed": "SIGNED",
    "format_coef": "FORMAT_COEF",
    "timeout_s": "TIMEOUT",
    "template": "TEMPLATE",
    "workers": "WORKERS",
    "fallback": "FALLBACK",
    "strict": "STRICT",
}
_PARSERS = {
    "signed": _parse_bool,
    "format_coef": float,
    "timeout_s": float,
    "template": lambda raw: raw or None,
    "workers": int,
    "fallback": _parse_fallback,
    "strict": _parse_bool,
}


def signed_reward_off_effect(baseline: str, std_scale: str, positive_only: bool) -> str | None:
    """What {0,1} rewards change against {-1,+1} in an advantage mode, or ``None`` when nothing but
    the logged reward changes (RAFT keeps the correct answers only; a std scale cancels the scale)."""
    if positive_only or std_scale == "whiten" or (baseline != "none" and std_scale != "none"):
        return None
    if baseline == "none":
        return ("a wrong answer gets advantage 0 and no gradient: only correct answers are reinforced "
                "(Reinforce degenerates to RAFT++)")
    return "the advantages are halved (r - baseline of {0,1} rewards is half that of {-1,+1})"
