"""The advantage-mode grid and the registry of named estimators built on it.

Every advantage mode is one :class:`AdvantageConfig`: five orthogonal switches plus the
correctness threshold. Named estimators (the papers' methods, the OpenRLHF 0.11.2 names included)
are :class:`Preset` records in :data:`PRESETS`; a new preset also carries the training settings its
authors released (KL, reward sign, loss, clip, entropy), each cited, so one lookup configures a run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, NamedTuple

FILTERS = ("none", "all_wrong", "all_correct", "both", "zero_std")
BASELINES = ("none", "group_mean", "group_loo", "batch_mean")
STD_SCALES = ("none", "group", "batch", "whiten")
STATS = ("sample", "token")
POLICY_LOSS_TYPES = ("ppo", "vanilla")
DROPPED_ROWS = ("exclude", "zero_advantage")
LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
# OpenRLHF's own policy losses and aggregations: its PolicyLoss computes them (ours: the rest), and
# its vLLM importance-sampling correction (--algo.advantage.is_correction_level) exists only there.
STOCK_POLICY_LOSS_TYPES = ("ppo", "gspo")
STOCK_LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean")


def is_stock_loss(policy_loss_type: str, loss_agg_mode: str) -> bool:
    """Whether OpenRLHF's own ``PolicyLoss`` computes this loss (else ours does)."""
    return policy_loss_type in STOCK_POLICY_LOSS_TYPES and loss_agg_mode in STOCK_LOSS_AGG_MODES


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is not valid; choose one of {', '.join(choices)}")


@dataclass(frozen=True)
class AdvantageConfig:
    """One point of the advantage grid (docs/algorithms.md §1).

    Attributes:
        filter: drop whole prompt groups whose n responses are all wrong / all correct / either, or
            (``zero_std``) whose rewards are all exactly equal (no spread; for continuous rewards).
        positive_only: keep only correct responses and give each kept one advantage 1 (RAFT,
            arXiv:2504.11343 Eq. 1). It fixes the advantage, so it cannot be combined with a baseline or a
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
        """The grid point of the named estimator (docs/algorithms.md §2), with single switches overridden.

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
class ExtConfig:
    """The resolved extension settings the experience maker and the policy loss read.

    Built once by the CLI (``openrlhf_ext.cli.resolve.finalize_extensions``) from the estimator's preset
    and the ``--ext.*`` flags, and carried to the Ray actors as ``args.ext_config`` (the arguments are
    pickled to them), so no worker resolves a preset or reads a switch by name again.

    Attributes:
        advantage: the grid point; None for ``gae`` (critic-based, stock OpenRLHF's path).
        gamma: the discount the grid applies: ``--algo.advantage.gamma`` when the preset honours it
            (:attr:`Preset.honours_gamma`), else 1 as in stock OpenRLHF.
        dropped_rows: how rows dropped by a filter / ``positive_only`` enter the loss (``exclude`` or
            ``zero_advantage``, :data:`DROPPED_ROWS`).
        overlong_filter: truncated responses are masked out of the loss.
        loss_norm_tokens: MAX_TOKENS of ``seq-mean-token-sum-norm`` (None for the other aggregations).
    """

    advantage: AdvantageConfig | None
    gamma: float = 1.0
    dropped_rows: str = "exclude"
    overlong_filter: bool = False
    loss_norm_tokens: int | None = None

    def __post_init__(self) -> None:
        _check_choice("dropped_rows", self.dropped_rows, DROPPED_ROWS)


class Setting(NamedTuple):
    """One training setting a preset carries: the value of a CLI flag and where it comes from."""

    value: Any
    source: str


@dataclass(frozen=True)
class Preset:
    """A named estimator: its grid point and the training settings its source uses.

    Attributes:
        config: the grid point, or None for ``gae`` (critic-based, no grid form).
        honours_gamma: gamma < 1 is applied. Stock OpenRLHF resets gamma to 1 for every
            critic-free estimator except ``reinforce``; the presets are defined at gamma 1.
        source: paper / equation the advantage reproduces.
        settings: CLI destination (``actor.loss_agg_mode``, ``algo.kl.init_coef``, ...) ->
            :class:`Setting`, each cited. The CLI applies them unless the flag is given explicitly.
            Stock OpenRLHF names carry none (they keep stock defaults), except the loss
            normaliser of ``dr_grpo`` (a documented deliberate difference).
    """

    name: str
    config: AdvantageConfig | None
    honours_gamma: bool
    source: str
    settings: Mapping[str, Setting] = dataclasses.field(default_factory=dict)

    @property
    def policy_loss_type(self) -> str:
        """``ppo`` (ratio + clip) or ``vanilla`` (−A·log π, RAFT)."""
        setting = self.settings.get("actor.policy_loss_type")
        return "ppo" if setting is None else setting.value

    @property
    def loss_agg_mode(self) -> str | None:
        """The aggregation the source prescribes, or None to keep the run's setting."""
        setting = self.settings.get("actor.loss_agg_mode")
        return None if setting is None else setting.value

    @property
    def requires_group(self) -> bool:
        """The estimator needs n_samples_per_prompt >= 2."""
        return self.config is not None and self.config.uses_groups


def _preset(
    name: str,
    source: str,
    *,
    settings: Mapping[str, Setting] | None = None,
    honours_gamma: bool = False,
    **switches: Any,
) -> Preset:
    return Preset(name, AdvantageConfig(**switches), honours_gamma, source, MappingProxyType(dict(settings or {})))


MINIMALIST = "A Minimalist Approach to LLM Reasoning: from Rejection Sampling to Reinforce, arXiv:2504.11343"
TRICKS_OR_TRAPS = "Part I: Tricks or Traps? A Deep Dive into RL for LLM Reasoning, arXiv:2508.08221"
DR_GRPO = "Understanding R1-Zero-Like Training: A Critical Perspective, arXiv:2503.20783"
REINFORCE_PP = "REINFORCE++: Stabilizing Critic-Free Policy Optimization with Global Advantage Normalization, arXiv:2501.03262"
_MINIMAL_RL_SCRIPTS = "RLHFlow/Minimal-RL scripts/run_raft.sh, run_raftpp.sh, run_reinforce_rej.sh"
_MINIMAL_RL_YAML = "RLHFlow/Minimal-RL verl/trainer/config/ppo_trainer.yaml"
_MINIMAL_RL_ALGOS = "RLHFlow/Minimal-RL verl/trainer/ppo/core_algos.py"
_ROLL_LITE_PPO = "alibaba/ROLL docs_roll/docs/User Guides/Algorithms/LitePPO.md"
_ROLL_ACTOR = "alibaba/ROLL roll/pipeline/rlvr/actor_worker.py"

# Everything the Minimal-RL authors' verl runs share (the paper, Sec. 3 "Hyperparameters": the
# Reinforce variants use the RAFT++ / GRPO scripts' settings).
_MINIMALIST_COMMON = {
    "algo.kl.use_loss": Setting(True, f"{_MINIMAL_RL_SCRIPTS}: actor.use_kl_loss=True (verl's "
                                      "algorithm.use_kl_in_reward stays False: no KL in the reward)"),
    "algo.kl.estimator": Setting("k3", f"{_MINIMAL_RL_SCRIPTS}: actor.kl_loss_type=low_var_kl, i.e. k3 clamped "
                                       f"to [-10, 10] ({_MINIMAL_RL_ALGOS} kl_penalty)"),
    "algo.kl.init_coef": Setting(0.001, f"{_MINIMAL_RL_SCRIPTS}: actor.kl_loss_coef=0.001"),
    "ext.signed_reward": Setting(True, f"{MINIMALIST}, Sec. 2 Notation: r(x, a) in {{-1, 1}} "
                                       "(Fig. 4 maps (1 + r)/2 to accuracy)"),
    "actor.loss_agg_mode": Setting("token-mean", f"{_MINIMAL_RL_YAML}: actor.loss_agg_mode token-mean"),
    "actor.entropy_coef": Setting(0.001, f"{_MINIMAL_RL_YAML}: actor.entropy_coeff 0.001 (the scripts keep it)"),
    "ext.dropped_rows": Setting("zero_advantage", f"{_MINIMAL_RL_ALGOS}: compute_raft_outcome_advantage and "
                                                  "compute_reinforce_rej_outcome_advantage give A = 0 and keep the "
                                                  "rows (in the loss normalisers and the KL loss)"),
}
_MINIMALIST_PLUSPLUS = {
    **_MINIMALIST_COMMON,
    "actor.policy_loss_type": Setting("ppo", "RLHFlow/Minimal-RL scripts/run_raftpp.sh, run_reinforce_rej.sh: "
                                             "actor.policy_loss=plusplus (ratio + clip)"),
    "actor.eps_clip": Setting(0.2, f"{_MINIMAL_RL_YAML}: actor.clip_ratio_low = clip_ratio_high = 0.2"),
    "actor.dual_clip": Setting(3.0, f"{_MINIMAL_RL_ALGOS} compute_policy_loss (the plusplus loss) always applies "
                                    f"the dual clip, clip_ratio_c 3.0 in {_MINIMAL_RL_YAML}"),
}
_RAFT = {
    **_MINIMALIST_COMMON,
    "actor.policy_loss_type": Setting("vanilla", f"RLHFlow/Minimal-RL scripts/run_raft.sh: actor.policy_loss=vanilla "
                                                 f"({_MINIMAL_RL_ALGOS} compute_policy_loss_vanilla: -A log pi, no "
                                                 "ratio, no clip)"),
}
_LITE_PPO = {
    "algo.kl.use_loss": Setting(True, f"{_ROLL_LITE_PPO}: use_kl_loss: true, add_token_level_kl: false"),
    "algo.kl.estimator": Setting("k3", f'{_ROLL_ACTOR}: the KL loss uses kl_penalty="k3"'),
    "algo.kl.init_coef": Setting(0.001, f"{_ROLL_LITE_PPO}: kl_loss_coef: 0.001"),
    "ext.signed_reward": Setting(False, "alibaba/ROLL roll/pipeline/rlvr/rewards/math_rule_reward_worker.py: "
                                        "reward 1 / 0"),
    "actor.loss_agg_mode": Setting("token-mean", f"{TRICKS_OR_TRAPS}, Lite PPO (token-level loss aggregation)"),
    "actor.policy_loss_type": Setting("ppo", f"{TRICKS_OR_TRAPS}, Lite PPO (the vanilla PPO loss)"),
    "actor.eps_clip": Setting(0.2, f"{_ROLL_LITE_PPO}: pg_clip: 0.2"),
    "actor.dual_clip": Setting(1.4, f"{_ROLL_LITE_PPO}: dual_clip_loss: true; {_ROLL_ACTOR} bounds the loss of "
                                    "A < 0 at (1 + 2 pg_clip)|A|, i.e. c = 1.4"),
    "actor.entropy_coef": Setting(0.0, "alibaba/ROLL roll/configs/base_config.py: entropy_loss_coef 0 "
                                       "(logged, no bonus)"),
    "ext.overlong_filter": Setting(False, f"{_ROLL_LITE_PPO}: Lite PPO removes overlong filtering"),
}

_PRESET_LIST = (
    _preset("reinforce_raw", f"{MINIMALIST}, Eq. 5 (Reinforce, A = r)", settings=_MINIMALIST_PLUSPLUS),
    _preset("raft", f"{MINIMALIST}, Eq. 1 (RAFT: SFT on correct samples)", positive_only=True, settings=_RAFT),
    _preset("raft_pp", f"{MINIMALIST}, Eq. 8 (RAFT++: RAFT with ratio + clip)", positive_only=True,
            settings=_MINIMALIST_PLUSPLUS),
    _preset("reinforce_rej", f"{MINIMALIST}, Sec. 4 (Reinforce-Rej: remove all-wrong and all-correct groups)",
            filter="both", settings=_MINIMALIST_PLUSPLUS),
    _preset("reinforce_rej_wrong", f"{MINIMALIST}, Fig. 4 ablation (remove all-wrong groups)", filter="all_wrong",
            settings=_MINIMALIST_PLUSPLUS),
    _preset("reinforce_rej_correct", f"{MINIMALIST}, Fig. 4 ablation (remove all-correct groups)",
            filter="all_correct", settings=_MINIMALIST_PLUSPLUS),
    _preset("reinforce_mean_zero", f"{MINIMALIST}, Fig. 4 ablation (subtract the group mean)", baseline="group_mean",
            settings=_MINIMALIST_PLUSPLUS),
    _preset("reinforce_rej_std", f"{MINIMALIST}, Fig. 4 ablation (r / group std, both filters)", filter="both",
            std_scale="group", settings=_MINIMALIST_PLUSPLUS),
    _preset("group_norm", f"{MINIMALIST}, Eq. 6 (GRPO)", baseline="group_mean", std_scale="group"),
    _preset(
        "dr_grpo",
        f"{DR_GRPO}, Sec. 3.2 (Dr. GRPO: no std, constant loss normaliser)",
        baseline="group_mean",
        settings={"actor.loss_agg_mode": Setting("seq-mean-token-sum-norm", f"{DR_GRPO}, Sec. 3.2; sail-sg/"
                                                 "understand-r1-zero train_zero_math.py: masked_sum with "
                                                 "constant_normalizer=generate_max_length")},
    ),
    _preset("lite_ppo", f"{TRICKS_OR_TRAPS}, Lite PPO (group mean, batch std)", baseline="group_mean",
            std_scale="batch", stats="sample", settings=_LITE_PPO),
    _preset("reinforce", f"{REINFORCE_PP}, Eq. 8-10 (global token-level whitening)", std_scale="whiten",
            stats="token", honours_gamma=True),
    _preset("reinforce_baseline", f"{REINFORCE_PP} (REINFORCE++-baseline: group mean, then global whitening)",
            baseline="group_mean", std_scale="whiten", stats="token"),
    _preset("rloo", "RLOO (leave-one-out group mean)", baseline="group_loo"),
    _preset("flash_reinforce", "OpenRLHF 0.11.2 flash_reinforce (reward minus the rollout-batch mean, no whitening)",
            baseline="batch_mean", stats="sample"),
    Preset("gae", None, True, "PPO with GAE (critic-based; stock OpenRLHF path)"),
)

PRESETS: Mapping[str, Preset] = MappingProxyType({p.name: p for p in _PRESET_LIST})
"""Every named estimator, the stock OpenRLHF 0.11.2 names included."""

STOCK_ESTIMATORS = ("gae", "reinforce", "rloo", "reinforce_baseline", "group_norm", "dr_grpo", "flash_reinforce")
"""The estimators OpenRLHF 0.11.2 ships; they must reproduce stock numbers and keep stock defaults."""

ESTIMATOR_ALIASES: Mapping[str, str] = MappingProxyType(
    {"grpo": "group_norm", "reinforce_plus_plus": "reinforce", "reinforce_plus_plus_baseline": "reinforce_baseline"}
)
"""Other names the papers and frameworks use for some estimators."""


def get_preset(name: str) -> Preset:
    """The :class:`Preset` called ``name``; an unknown name raises ``ValueError`` listing the valid ones."""
    try:
        return PRESETS[ESTIMATOR_ALIASES.get(name, name)]
    except KeyError:
        valid = ", ".join([*PRESETS, *ESTIMATOR_ALIASES])
        raise ValueError(f"unknown advantage estimator {name!r}; valid: {valid}") from None


def resolve_config(config: AdvantageConfig | str) -> AdvantageConfig:
    """Accept either a grid point or a preset name."""
    if isinstance(config, AdvantageConfig):
        return config
    if isinstance(config, str):
        return AdvantageConfig.from_preset(config)
    raise TypeError(f"expected an AdvantageConfig or a preset name, got {type(config).__name__}")


def preset_settings_markdown() -> str:
    """The table of every preset's training settings and their sources (docs/algorithms.md §2.1;
    ``tests/test_presets.py`` fails when the committed docs differ)."""
    lines = ["| estimator | flag | value | source |", "|---|---|---|---|"]
    for preset in PRESETS.values():
        for dest, setting in preset.settings.items():
            lines.append(f"| `{preset.name}` | `--{dest}` | `{setting.value}` | {setting.source} |")
    return "\n".join(lines) + "\n"
