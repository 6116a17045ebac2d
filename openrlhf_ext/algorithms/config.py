"""The advantage-mode grid (SPEC §1) and the registry of named estimators built on it.

Every advantage mode is one :class:`AdvantageConfig`: five orthogonal switches plus the
correctness threshold. Named estimators (the rows of SPEC §1's preset table, the OpenRLHF 0.11.2
names included) are :class:`Preset` records in :data:`PRESETS`; a preset also carries the policy
loss and loss aggregation its paper uses, so one lookup configures a run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

FILTERS = ("none", "all_wrong", "all_correct", "both")
BASELINES = ("none", "group_mean", "group_loo", "batch_mean")
STD_SCALES = ("none", "group", "batch", "whiten")
STATS = ("sample", "token")
POLICY_LOSS_TYPES = ("ppo", "vanilla")
LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {', '.join(choices)}")


@dataclass(frozen=True)
class AdvantageConfig:
    """One point of the advantage grid of SPEC §1.

    Attributes:
        filter: drop whole prompt groups whose n responses are all wrong / all correct / either.
        positive_only: keep only correct responses and give each kept one advantage 1 (RAFT,
            seed 000 Eq. 1). It fixes the advantage, so it cannot be combined with a baseline or a
            std scale (every such combination would zero all advantages).
        baseline: subtract the group mean, the leave-one-out group mean (RLOO) or the mean over
            all kept samples of the batch.
        std_scale: divide by the unbiased std of the group's rewards (GRPO), by the unbiased std
            of the raw rewards of all kept samples (Lite PPO), or whiten (REINFORCE++: subtract the
            batch mean of the baselined values and divide by their population std).
        stats: weight each sample once (``sample``) or by its number of action tokens
            (``token``) in batch statistics (``batch_mean``, ``batch``, ``whiten``).
        correct_threshold: a response is correct when its reward is strictly above this.
        std_eps: added to a non-zero group/batch std before dividing. 1e-9 reproduces stock
            OpenRLHF's ``group_norm`` (``(r - mean) / (std + 1e-9)``). A std of exactly 0 is never
            divided by: the numerator is left unscaled (see :mod:`.advantages`).
    """

    filter: str = "none"
    positive_only: bool = False
    baseline: str = "none"
    std_scale: str = "none"
    stats: str = "sample"
    correct_threshold: float = 0.0
    std_eps: float = 1e-9

    def __post_init__(self) -> None:
        _check_choice("filter", self.filter, FILTERS)
        _check_choice("baseline", self.baseline, BASELINES)
        _check_choice("std_scale", self.std_scale, STD_SCALES)
        _check_choice("stats", self.stats, STATS)
        if not isinstance(self.positive_only, bool):
            raise ValueError(f"positive_only must be a bool, got {self.positive_only!r}")
        if self.positive_only and (self.baseline != "none" or self.std_scale != "none"):
            raise ValueError(
                "positive_only=True fixes every kept advantage to 1 (RAFT); combining it with "
                f"baseline={self.baseline!r} / std_scale={self.std_scale!r} would make every advantage 0. "
                "Use baseline='none' and std_scale='none'."
            )
        if not self.std_eps >= 0.0:
            raise ValueError(f"std_eps must be >= 0, got {self.std_eps!r}")

    @property
    def uses_groups(self) -> bool:
        """True when a statistic is taken over a prompt group (meaningless for n = 1)."""
        return self.filter != "none" or self.baseline in ("group_mean", "group_loo") or self.std_scale == "group"

    @property
    def uses_batch_stats(self) -> bool:
        """True when a statistic is taken over the whole batch (``stats`` then matters)."""
        return self.baseline == "batch_mean" or self.std_scale in ("batch", "whiten")

    def replace(self, **overrides: Any) -> AdvantageConfig:
        """A copy with some switches changed; unknown switch names raise ``ValueError``."""
        unknown = set(overrides) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            valid = ", ".join(f.name for f in dataclasses.fields(self))
            raise ValueError(f"unknown advantage switch(es) {sorted(unknown)}; valid: {valid}")
        return dataclasses.replace(self, **overrides)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> AdvantageConfig:
        """The grid point of the named estimator (SPEC §1 preset table), with single switches overridden.

        ``gae`` raises ``ValueError``: it needs a critic and has no grid form (stock OpenRLHF's
        GAE path computes it).
        """
        preset = get_preset(name)
        if preset.config is None:
            raise ValueError(
                f"advantage estimator {name!r} is critic-based (GAE) and has no grid form; "
                "it is computed by stock OpenRLHF's get_advantages_and_returns"
            )
        return preset.config.replace(**overrides) if overrides else preset.config


@dataclass(frozen=True)
class Preset:
    """A named estimator: its grid point and the training settings its source uses.

    Attributes:
        config: the grid point, or None for ``gae`` (critic-based, no grid form).
        policy_loss_type: ``ppo`` (ratio + clip) or ``vanilla`` (−A·log π, RAFT).
        loss_agg_mode: the aggregation the source prescribes, or None to keep the run's setting.
        honours_gamma: gamma < 1 is applied. Stock OpenRLHF resets gamma to 1 for every
            critic-free estimator except ``reinforce``; the SPEC presets are defined at gamma 1.
        source: paper / equation the preset reproduces.
    """

    name: str
    config: AdvantageConfig | None
    policy_loss_type: str
    loss_agg_mode: str | None
    honours_gamma: bool
    source: str

    @property
    def requires_group(self) -> bool:
        """The estimator needs n_samples_per_prompt >= 2."""
        return self.config is not None and self.config.uses_groups


def _preset(
    name: str,
    source: str,
    *,
    policy_loss_type: str = "ppo",
    loss_agg_mode: str | None = None,
    honours_gamma: bool = False,
    **switches: Any,
) -> Preset:
    config = AdvantageConfig(**switches)
    return Preset(
        name=name,
        config=config,
        policy_loss_type=policy_loss_type,
        loss_agg_mode=loss_agg_mode,
        honours_gamma=honours_gamma,
        source=source,
    )


_PRESET_LIST = (
    _preset("reinforce_raw", "seed 000 'Reinforce', Eq. 5 (A = r)"),
    _preset("raft", "seed 000 Eq. 1 (RAFT: SFT on correct samples)", positive_only=True, policy_loss_type="vanilla"),
    _preset("raft_pp", "seed 000 Eq. 8 (RAFT++: RAFT with ratio + clip)", positive_only=True),
    _preset("reinforce_rej", "seed 000 'Reinforce-Rej' (remove all-wrong and all-correct groups)", filter="both"),
    _preset("reinforce_rej_wrong", "seed 000 ablation (remove all-wrong groups)", filter="all_wrong"),
    _preset("reinforce_rej_correct", "seed 000 ablation (remove all-correct groups)", filter="all_correct"),
    _preset("reinforce_mean_zero", "seed 000 ablation (subtract the group mean)", baseline="group_mean"),
    _preset("reinforce_rej_std", "seed 000 ablation (r / group std, both filters)", filter="both", std_scale="group"),
    _preset("group_norm", "seed 000 Eq. 6 (GRPO)", baseline="group_mean", std_scale="group"),
    _preset(
        "dr_grpo",
        "seed 004 §3.2 (Dr. GRPO: no std, constant loss normaliser)",
        baseline="group_mean",
        loss_agg_mode="seq-mean-token-sum-norm",
    ),
    _preset(
        "lite_ppo",
        "seed 003 (Lite PPO: group mean, batch std, token-level loss)",
        baseline="group_mean",
        std_scale="batch",
        stats="sample",
        loss_agg_mode="token-mean",
    ),
    _preset(
        "reinforce",
        "seed 001 Eq. 8-10 (REINFORCE++: global token-level whitening)",
        std_scale="whiten",
        stats="token",
        honours_gamma=True,
    ),
    _preset(
        "reinforce_baseline",
        "seed 001 (REINFORCE++-baseline: group mean, then global whitening)",
        baseline="group_mean",
        std_scale="whiten",
        stats="token",
    ),
    _preset("rloo", "RLOO (leave-one-out group mean)", baseline="group_loo"),
    _preset(
        "flash_reinforce",
        "OpenRLHF 0.11.2 flash_reinforce (reward minus the rollout-batch mean, no whitening)",
        baseline="batch_mean",
        stats="sample",
    ),
    Preset(
        name="gae",
        config=None,
        policy_loss_type="ppo",
        loss_agg_mode=None,
        honours_gamma=True,
        source="PPO with GAE (critic-based; stock OpenRLHF path)",
    ),
)

PRESETS: Mapping[str, Preset] = MappingProxyType({p.name: p for p in _PRESET_LIST})
"""Every named estimator of SPEC §1, the stock OpenRLHF 0.11.2 names included."""

STOCK_ESTIMATORS = ("gae", "reinforce", "rloo", "reinforce_baseline", "group_norm", "dr_grpo", "flash_reinforce")
"""The estimators OpenRLHF 0.11.2 ships; they must reproduce stock numbers (SPEC §1)."""


def get_preset(name: str) -> Preset:
    """The :class:`Preset` called ``name``; an unknown name raises ``ValueError`` listing the valid ones."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown advantage estimator {name!r}; valid: {', '.join(PRESETS)}") from None


def resolve_config(config: AdvantageConfig | str) -> AdvantageConfig:
    """Accept either a grid point or a preset name."""
    if isinstance(config, AdvantageConfig):
        return config
    if isinstance(config, str):
        return AdvantageConfig.from_preset(config)
    raise TypeError(f"expected an AdvantageConfig or a preset name, got {type(config).__name__}")
