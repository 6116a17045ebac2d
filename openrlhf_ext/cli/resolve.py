"""Resolution of the parsed (flat) namespace, before OpenRLHF's own validation: the platform and the
embedded demo fill in what the user did not give, the estimator's preset expands into the grid
switches and its training settings, our additions are validated, and the one typed
:class:`~openrlhf_ext.algorithms.config.ExtConfig` the workers read is built (``args.ext_config``),
with the provenance of every value (``args.provenance``)."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from collections.abc import Sequence
from typing import Any

from openrlhf_ext.algorithms.config import (
    STOCK_ESTIMATORS,
    AdvantageConfig,
    ExtConfig,
    Preset,
    get_preset,
    is_stock_loss,
)
from openrlhf_ext.cli.demo_profile import fill_embedded_defaults
from openrlhf_ext.cli.errors import PROG, ConfigError
from openrlhf_ext.cli.ext_flags import ON_OFF_DEFAULTS
from openrlhf_ext.cli.legacy_flags import dests_of
from openrlhf_ext.cli.platform_flags import apply_platform, run_platform, size_layout
from openrlhf_ext.cli.stock_validation import refuse_what_stock_validation_crashes_on
from openrlhf_ext.job.checks import loss_conflict
from openrlhf_ext.job.restarts import DEFAULT_MAX_RESTARTS
from openrlhf_ext.rewards.config import signed_reward_off_effect

GRID_SWITCHES = ("filter", "baseline", "std_scale", "stats", "positive_only")


def explicit_dests(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The dests the user set on the command line (to let explicit flags win over presets); a legacy
    flag that sets several (``--max_norm``: the actor's and the critic's) counts for each."""
    options = parser._option_string_actions
    found: set[str] = set()
    for token in argv:
        if not token.startswith("--") or token == "--":
            continue
        name = token.split("=", 1)[0]
        if name in options:
            found.update(dests_of(options[name]))
        elif parser.allow_abbrev:
            matches = {dests_of(a) for opt, a in options.items() if opt.startswith(name)}
            if len(matches) == 1:
                found.update(*matches)
    return found


def finalize_extensions(ns: argparse.Namespace, explicit: set[str]) -> argparse.Namespace:
    """Expand the estimator preset into the grid switches; validate what we added; build the one typed
    :class:`~openrlhf_ext.algorithms.config.ExtConfig` the workers read (``args.ext_config``)."""
    get = lambda key: getattr(ns, key)  # noqa: E731
    platform = run_platform()
    laptop = size_layout(ns, explicit, platform)
    embedded = fill_embedded_defaults(ns, explicit)
    for_cpu = apply_platform(ns, explicit, platform)
    preset = get_preset(get("algo.advantage.estimator"))
    estimator = preset.name  # an alias (grpo, reinforce_plus_plus, ...) runs as its canonical name
    setattr(ns, "algo.advantage.estimator", estimator)
    for dest in ON_OFF_DEFAULTS:
        if get(dest) is not None:
            setattr(ns, dest, get(dest) == "on")
    from_preset = _apply_preset_settings(ns, preset, explicit)
    if "algo.advantage.is_correction_level" in embedded and not is_stock_loss(get("actor.policy_loss_type"),
                                                                             get("actor.loss_agg_mode")):
        setattr(ns, "algo.advantage.is_correction_level", "off")  # the demo's default yields to the preset's loss
    conflict = loss_conflict(vars(ns))
    if conflict:
        raise ConfigError(conflict)
    for dest, value in ON_OFF_DEFAULTS.items():
        if get(dest) is None:
            setattr(ns, dest, value)

    overrides: dict[str, Any] = {}
    for switch in GRID_SWITCHES[:-1]:
        if get(f"ext.{switch}") is not None:
            overrides[switch] = get(f"ext.{switch}")
    if get("ext.positive_only") is not None:
        overrides["positive_only"] = get("ext.positive_only") == "on"
    config: AdvantageConfig | None = None
    if preset.config is None:
        if overrides:
            raise ConfigError(
                f"--ext.{next(iter(overrides))}: the grid switches do not apply to --algo.advantage.estimator "
                f"{estimator} (critic-based GAE); pick a critic-free estimator"
            )
    else:
        try:
            config = preset.config.replace(correct_threshold=get("ext.correct_threshold"), **overrides)
        except ValueError as err:
            flags = ", ".join(f"--ext.{k}" for k in overrides) or "--algo.advantage.estimator"
            raise ConfigError(f"{flags}: {err}") from None
        for key, value in dataclasses.asdict(config).items():  # the flags' resolved values, for the record
            setattr(ns, f"ext.{key}", value)
        from_preset |= {f"ext.{switch}" for switch in GRID_SWITCHES if switch not in overrides}
        if not get("ext.signed_reward"):
            _warn_unsigned(preset, config, explicit)
        n = get("rollout.n_samples_per_prompt")
        if config.uses_groups and n < 2:
            raise ConfigError(
                f"--rollout.n_samples_per_prompt: {estimator} (filter={config.filter}, baseline={config.baseline}, "
                f"std_scale={config.std_scale}) compares the responses of a prompt and needs at least 2, got {n}"
            )

    if get("train.async_enable") and (estimator not in STOCK_ESTIMATORS or any(overrides.values())):
        # OpenRLHF's async trainer builds its own experience maker, which our injection does not reach.
        raise ConfigError(
            f"--train.async_enable: runs OpenRLHF's async trainer, which supports only the stock estimators "
            f"({', '.join(STOCK_ESTIMATORS)}) without --ext.* switches; got {estimator}"
        )

    if get("ext.dropped_rows") is None:
        setattr(ns, "ext.dropped_rows", "exclude")
    if get("ext.strict_format") and "ext.reward_fallback" in explicit and get("ext.reward_fallback"):
        raise ConfigError("--ext.reward_fallback on: contradicts --ext.strict_format on (Dr. GRPO's strict reward "
                          "scores only the template's answer form, never a bare number)")

    # Legacy --prompt_max_len + --generate_max_len -> --data.max_len (total length in 0.11.2).
    prompt_max_len = get("ext.prompt_max_len")
    if prompt_max_len is not None and "data.max_len" not in explicit:
        new_tokens = get("rollout.max_new_tokens")
        if new_tokens is None:
            raise ConfigError("--prompt_max_len: needs --generate_max_len (or set --data.max_len directly)")
        setattr(ns, "data.max_len", prompt_max_len + new_tokens)

    if get("actor.loss_agg_mode") == "seq-mean-token-sum-norm":
        norm = get("ext.loss_norm_tokens") or get("rollout.max_new_tokens") or get("data.max_len")
        if norm <= 0:
            raise ConfigError(f"--ext.loss_norm_tokens: must be positive, got {norm}")
        setattr(ns, "ext.loss_norm_tokens", norm)
    gamma = get("algo.advantage.gamma") if preset.honours_gamma else 1.0
    ns.ext_config = ExtConfig(config, gamma, get("ext.dropped_rows"), get("ext.overlong_filter"),
                              get("ext.loss_norm_tokens"))

    saves_checkpoints = get("ckpt.save_steps") > 0 and not get("ckpt.disable_ds")
    if get("ext.max_restarts") is None:  # a restart resumes from a checkpoint: none to resume from, no restarts
        setattr(ns, "ext.max_restarts", DEFAULT_MAX_RESTARTS if saves_checkpoints else 0)
    elif get("ext.max_restarts") > 0 and not saves_checkpoints:
        raise ConfigError("--ext.max_restarts: a restart resumes from the newest checkpoint and this run saves none; "
                          "add --ckpt.save_steps K (and no --ckpt.disable_ds) or pass --ext.max_restarts 0")

    if get("ext.reward_timeout") <= 0 or not math.isfinite(get("ext.reward_timeout")):
        raise ConfigError(f"--ext.reward_timeout: must be a positive number of seconds, got {get('ext.reward_timeout')}")

    refuse_what_stock_validation_crashes_on(ns)
    ns.provenance = _provenance(ns, explicit, from_preset, embedded, for_cpu)
    ns.provenance.update(dict.fromkeys(laptop | for_cpu, "cpu"))  # an adapted flag the user gave included
    ns.platform = platform
    return ns


def _apply_preset_settings(ns: argparse.Namespace, preset: Preset, explicit: set[str]) -> set[str]:
    """Set every training setting the preset carries, unless its flag was given; return the dests set."""
    applied = set()
    for dest, setting in preset.settings.items():
        if dest not in explicit:
            setattr(ns, dest, setting.value)
            applied.add(dest)
    return applied


def _warn_unsigned(preset: Preset, config: AdvantageConfig, explicit: set[str]) -> None:
    """One stderr line when {0,1} rewards change what the advantage mode does (honoured, not refused)."""
    effect = signed_reward_off_effect(config.baseline, config.std_scale, config.positive_only)
    preset_signed = preset.settings.get("ext.signed_reward")
    if preset_signed is not None and preset_signed.value and "ext.signed_reward" in explicit:
        print(f"{PROG}: warning: --ext.signed_reward off: {preset.name} is defined with rewards in {{-1,+1}}; "
              f"with {{0,1}} {effect or 'the advantages do not change, only the logged reward'}",
              file=sys.stderr, flush=True)
    elif effect:
        print(f"{PROG}: warning: {{0,1}} rewards: {effect} (give --ext.signed_reward for {{-1,+1}})",
              file=sys.stderr, flush=True)


def _provenance(ns: argparse.Namespace, explicit: set[str], from_preset: set[str], embedded: set[str],
                for_cpu: set[str]) -> dict:
    """Where each resolved value came from: the user's flags, the estimator's preset, the embedded
    demo profile, the choice for this CPU, or the stock (parser / derived) default."""

    def origin(dest: str) -> str:
        if dest in explicit:
            return "user"
        if dest in from_preset:
            return "preset"
        if dest in for_cpu:
            return "cpu"
        return "embedded" if dest in embedded else "stock"

    return {dest: origin(dest) for dest in sorted(vars(ns)) if dest not in ("print_config", "provenance", "ext_config")}
