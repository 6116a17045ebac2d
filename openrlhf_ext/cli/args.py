"""The ``train_ppo_ray`` command line: OpenRLHF 0.11.2's parser and validation, extended.

OpenRLHF builds its parser and validates the arguments inside the ``if __name__ == "__main__":``
block of ``openrlhf/cli/train_ppo_ray.py``, so neither can be imported. Rather than copy that
block, :func:`run_stock_main` executes it (read with :mod:`ast` from the installed file) with
``argparse.ArgumentParser.parse_args`` hooked for the duration:

1. the hook receives the stock parser, fully built, and extends it (:func:`extend_parser`):
   more choices for the estimator / policy loss / loss aggregation, the ``--ext.*`` grid switches,
   the legacy flat spellings (:mod:`openrlhf_ext.cli.legacy_flags`) and ``--print_config``;
2. it parses, expands the estimator preset into the grid switches and validates our additions
   (:func:`finalize_extensions`);
3. OpenRLHF's own validation then runs unchanged on the result and finally calls the ``train``
   function we pass in.

So every stock flag keeps its stock default and meaning, and an OpenRLHF upgrade that changes
the parser is picked up (or breaks loudly in ``tests/test_cli.py``).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib.util
import json
import math
import sys
import types
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any, NoReturn

from openrlhf_ext.algorithms.config import (
    BASELINES,
    DROPPED_ROWS,
    ESTIMATOR_ALIASES,
    FILTERS,
    LOSS_AGG_MODES,
    POLICY_LOSS_TYPES,
    PRESETS,
    STATS,
    STD_SCALES,
    STOCK_ESTIMATORS,
    AdvantageConfig,
    ExtConfig,
    Preset,
    get_preset,
    is_stock_loss,
)
from openrlhf_ext.cli.legacy_flags import add_legacy_flags
from openrlhf_ext.data.templates import TEMPLATE_NAMES
from openrlhf_ext.job.checks import RangeError, check_numeric_ranges, loss_conflict
from openrlhf_ext.job.inputs import EMBEDDED_MODEL, EMBEDDED_PROMPTS
from openrlhf_ext.job.restarts import DEFAULT_MAX_RESTARTS
from openrlhf_ext.platforms import Platform, PlatformError, choose_platform
from openrlhf_ext.reaches import Where, scoped
from openrlhf_ext.reporting.records import config_to_dict
from openrlhf_ext.rewards.config import signed_reward_off_effect

STOCK_MODULE = "openrlhf.cli.train_ppo_ray"
PROG = "python -m openrlhf_ext.cli.train_ppo_ray"

NEW_PARAM_DTYPES = ("fp32",)  # the CPU default where bf16 would be emulated


ON_OFF = ("on", "off")
GRID_SWITCHES = ("filter", "baseline", "std_scale", "stats", "positive_only")
# Our on/off flags, their value when neither the user nor the preset sets them.
ON_OFF_DEFAULTS = {"ext.signed_reward": False, "ext.overlong_filter": False, "ext.reward_fallback": True,
                   "ext.strict_format": False}

# Defaults for the embedded CPU demo (no --pretrain given): a 2-core machine, about 10 steps in
# under 10 minutes. Any of these given explicitly on the command line wins. Its layout (one rank per
# role) is the laptop layout of openrlhf_ext.cpu.layout.
EMBEDDED_PROFILE: dict[str, Any] = {
    "rollout.n_samples_per_prompt": 4,
    "rollout.batch_size": 8,
    "rollout.micro_batch_size": 8,
    "train.batch_size": 32,
    "train.micro_batch_size": 8,
    "rollout.max_new_tokens": 48,
    "data.max_len": 256,
    "ds.zero_stage": 3,
    "ds.attn_implementation": "sdpa",
    "actor.adam.lr": 1e-5,
    "actor.lr_warmup_ratio": 0.0,
    "ckpt.output_dir": "runs/demo",
    "ext.num_prompts": 80,
    "ext.difficulty": 0,
    "actor.entropy_coef": 0.0,  # 0 = log the policy entropy without adding it to the loss
    # vLLM's rollout log-probs go to the trainer: per-token importance weights against the small
    # vLLM-vs-DeepSpeed numeric gap (tokens whose ratio leaves [0.5, 5] are masked), and the metric
    # vllm_kl, which shows every step that the engine samples from the synced policy.
    "algo.advantage.is_correction_level": "token",
}

def default_reward_file() -> str:
    """The project's math reward, in OpenRLHF's ``--reward.remote_url file.py`` form."""
    package_dir = Path(importlib.util.find_spec("openrlhf_ext.rewards").origin).parent
    return str(package_dir / "math_reward_func.py")


class ConfigError(ValueError):
    """An invalid flag or flag combination; the message starts with the flag it is about."""


# ---------------------------------------------------------------------------------------------
# Our additions to the parser


def _add_ext_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "openrlhf-ext advantage grid (docs/algorithms.md §1)",
        "Each estimator is a preset of these switches; a switch given here overrides the preset.",
    )
    group.add_argument("--ext.filter", choices=FILTERS, default=None,
                       help="drop prompt groups whose responses are all wrong / all correct / either, or whose "
                            "rewards are all equal (zero_std)")
    group.add_argument("--ext.positive_only", choices=ON_OFF, default=None,
                       help="keep only correct responses, advantage 1 (RAFT)")
    group.add_argument("--ext.baseline", choices=BASELINES, default=None,
                       help="baseline subtracted from the reward")
    group.add_argument("--ext.std_scale", choices=STD_SCALES, default=None,
                       help="std the baselined reward is divided by")
    group.add_argument("--ext.stats", choices=STATS, default=None,
                       help="weight batch statistics per sample or per action token")
    group.add_argument("--ext.correct_threshold", type=float, default=0.0,
                       help="a response is correct when its reward is above this")
    group.add_argument("--ext.loss_norm_tokens", type=int, default=None,
                       help="MAX_TOKENS of seq-mean-token-sum-norm (default: --rollout.max_new_tokens)")
    group.add_argument("--ext.dropped_rows", choices=DROPPED_ROWS, default=None,
                       help="samples dropped by a filter / positive_only: 'exclude' = out of the loss and its "
                            "normalisers; 'zero_advantage' = rows stay with A = 0, counted in the normalisers and "
                            "the KL loss (Minimal-RL's code; default of its presets)")
    group.add_argument("--ext.overlong_filter", choices=ON_OFF, nargs="?", const="on", default=None,
                       help="mask truncated responses (finish reason 'length') out of the loss")
    group.add_argument("--ext.prompt_max_len", type=int, default=None,
                       help="legacy --prompt_max_len; with --generate_max_len it sets --data.max_len")

    reward = parser.add_argument_group("openrlhf-ext math reward and prompts (docs/rewards.md)")
    reward.add_argument("--ext.template", choices=TEMPLATE_NAMES, default=None,
                        help="prompt template applied when the prompt dataset is built "
                             "(default: stock --data.input_template / --data.apply_chat_template handling; "
                             "'chat' for the embedded data)")
    reward.add_argument("--ext.signed_reward", choices=ON_OFF, nargs="?", const="on", default=None,
                        help="math reward in {-1,+1} instead of {0,1} (bare flag = on; default: the estimator's "
                             "preset, else off)")
    reward.add_argument("--ext.reward_fallback", choices=ON_OFF, default=None,
                        help="count the last number of a response as its answer when it has no boxed / answer-tag "
                             "/ #### answer (default on)")
    reward.add_argument("--ext.strict_format", choices=ON_OFF, default=None,
                        help="Dr. GRPO's reward: only the template's answer form scores (r1: '</think> <answer>' "
                             "... '</answer>'; other templates: \\boxed{}); implies no fallback (default off)")
    reward.add_argument("--ext.format_reward_coef", type=float, default=0.0,
                        help="weight of the optional format reward")
    reward.add_argument("--ext.reward_timeout", type=float, default=5.0,
                        help="hard wall-clock limit (s) of one scoring call")
    reward.add_argument("--ext.difficulty", type=int, default=1,
                        help="difficulty of the embedded generated problems (0 easiest)")
    reward.add_argument("--ext.num_prompts", type=int, default=256,
                        help="number of embedded generated problems")

    tracking = parser.add_argument_group("openrlhf-ext tracking and console (besides stock --logger.*)")
    tracking.add_argument("--ext.mlflow_uri", nargs="?", const="", default=None, metavar="URI",
                          help="log the configuration and every step's metrics to mlflow at this tracking URI "
                               "(http://host:5000, sqlite:///path.db, databricks, ...); bare flag: "
                               "sqlite:///<ckpt.output_dir>/mlflow.db. Experiment: $MLFLOW_EXPERIMENT_NAME "
                               "(default openrlhf-ext); run name: --logger.wandb.run_name")
    tracking.add_argument("--ext.verbose", action="store_true", default=False,
                          help="print everything on the terminal, as stock (model reprs, argument namespaces, "
                               "library warnings); default: the terminal shows one line per step under a "
                               "progress bar and the rest goes to <ckpt.output_dir>/train.log")

    faults = parser.add_argument_group("openrlhf-ext faults")
    faults.add_argument("--ext.max_restarts", type=int, default=None, metavar="N",
                        help="when an actor dies (generator, reference, policy rank, reward unreachable), start the "
                             "actors again and resume from the newest intact checkpoint, at most N times; needs "
                             f"--ckpt.save_steps (default: {DEFAULT_MAX_RESTARTS} when checkpoints are saved, else 0)")

    parser.add_argument("--print_config", action="store_true", default=False,
                        help="print the resolved, validated configuration as JSON and exit")


def _extend_choices(parser: argparse.ArgumentParser, dest: str, extra: Sequence[str]) -> None:
    action = next(a for a in parser._actions if a.dest == dest)
    action.choices = list(action.choices) + [c for c in extra if c not in action.choices]


def _one_line_error(parser: argparse.ArgumentParser, message: str) -> None:
    """argparse's error() without the (very long) usage block: one line naming the flag."""
    parser.exit(2, f"{parser.prog}: error: {message} (see --help)\n")


def extend_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    _extend_choices(parser, "algo.advantage.estimator", [*PRESETS, *ESTIMATOR_ALIASES])
    _extend_choices(parser, "actor.policy_loss_type", POLICY_LOSS_TYPES)
    _extend_choices(parser, "actor.loss_agg_mode", LOSS_AGG_MODES)
    _extend_choices(parser, "ds.param_dtype", NEW_PARAM_DTYPES)
    _add_ext_arguments(parser)
    add_legacy_flags(parser)
    parser.prog = PROG
    parser.error = types.MethodType(_one_line_error, parser)
    return parser


# ---------------------------------------------------------------------------------------------
# Preset expansion and validation (flat namespace, before OpenRLHF's own validation)


def explicit_dests(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The dests the user set on the command line (to let explicit flags win over presets)."""
    options = parser._option_string_actions
    found = set()
    for token in argv:
        if not token.startswith("--") or token == "--":
            continue
        name = token.split("=", 1)[0]
        if name in options:
            found.add(options[name].dest)
        elif parser.allow_abbrev:
            matches = {a.dest for opt, a in options.items() if opt.startswith(name)}
            if len(matches) == 1:
                found |= matches
    return found


def finalize_extensions(ns: argparse.Namespace, explicit: set[str]) -> argparse.Namespace:
    """Expand the estimator preset into the grid switches; validate what we added; build the one typed
    :class:`~openrlhf_ext.algorithms.config.ExtConfig` the workers read (``args.ext_config``)."""
    get = lambda key: getattr(ns, key)  # noqa: E731
    platform = _choose_platform()
    laptop = _size_layout(ns, explicit, platform)
    embedded = _fill_embedded_defaults(ns, explicit)
    for_cpu = _apply_platform(ns, explicit, platform)
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


def _choose_platform() -> Platform:
    """The run's platform, chosen once (:func:`openrlhf_ext.platforms.choose_platform`)."""
    try:
        return choose_platform()
    except PlatformError as err:
        raise ConfigError(str(err)) from None


def _apply_platform(ns: argparse.Namespace, explicit: set[str], platform: Platform) -> set[str]:
    """The platform's defaults (a ``--ds.param_dtype`` the user did not give: on CPU, the one this CPU
    computes fast) and adaptations (on CPU: flags that can only mean CUDA), or its refusal; before
    ``--print_config`` and Ray, so the printed configuration is the one that runs. Returns the dests set."""
    try:
        return platform.apply_to(ns, explicit)
    except PlatformError as err:
        raise ConfigError(str(err)) from None


def _size_layout(ns: argparse.Namespace, explicit: set[str], platform: Platform) -> set[str]:
    """OpenRLHF's layout defaults are a GPU node's (8 policy, 8 reference, 8 critic ranks). On the
    CPU platform when the run starts its own Ray (or for the embedded demo) every layout flag the
    user did not give becomes one rank / one engine (the launch says so, from the provenance 'cpu').
    Call before the demo fills in its model. Returns the dests set."""
    from openrlhf_ext.cpu.layout import laptop_layout

    if not (platform.sizes_layout or getattr(ns, "actor.model_name_or_path") is None):
        return set()
    changes = laptop_layout(vars(ns), explicit)
    for dest, (_, new) in changes.items():
        setattr(ns, dest, new)
    return set(changes)


def _fill_embedded_defaults(ns: argparse.Namespace, explicit: set[str]) -> set[str]:
    """No model / data / reward flags: train the embedded model on generated problems. Returns the
    dests of the demo profile that were filled in."""
    filled = set()
    if getattr(ns, "actor.model_name_or_path") is None:
        setattr(ns, "actor.model_name_or_path", EMBEDDED_MODEL)
        for dest, value in EMBEDDED_PROFILE.items():
            if dest not in explicit:
                setattr(ns, dest, value)
                filled.add(dest)
    if getattr(ns, "data.prompt_dataset") is None:
        setattr(ns, "data.prompt_dataset", EMBEDDED_PROMPTS)
        if getattr(ns, "ext.template") is None:
            setattr(ns, "ext.template", "chat")
    no_reward = not (
        getattr(ns, "reward.remote_url") or getattr(ns, "reward.model_name_or_path")
        or getattr(ns, "train.agent_func_path")
    )
    if no_reward:
        setattr(ns, "reward.remote_url", default_reward_file())
    return filled


# ---------------------------------------------------------------------------------------------
# Running OpenRLHF's __main__ block with the hook


def _stock_main_block() -> ast.Module:
    origin = importlib.util.find_spec(STOCK_MODULE).origin
    with open(origin, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=origin)
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "__name__ == '__main__'":
            return ast.Module(body=node.body, type_ignores=[])
    raise RuntimeError(f"{origin}: no `if __name__ == '__main__'` block; OpenRLHF's CLI layout changed")


class _ParserCaptured(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


OnParse = Callable[[argparse.ArgumentParser], argparse.Namespace]
_on_parse: ContextVar[OnParse | None] = ContextVar("openrlhf_ext_on_parse", default=None)


def parse_with_extensions(original: Callable) -> Callable:
    """The ``parser`` reach of :data:`openrlhf_ext.reaches.REACHES`: the first ``parse_args`` call
    inside :func:`_hooked_parse_args` (OpenRLHF's, on its fully built parser) goes to the hook."""

    def parse_args(self, args=None, namespace=None):
        on_parse = _on_parse.get()
        if on_parse is None:  # one shot: sub-parsers (and every parser outside the block) parse as usual
            return original(self, args, namespace)
        _on_parse.set(None)
        return on_parse(self)

    return parse_args


@contextmanager
def _hooked_parse_args(on_parse: OnParse):
    token = _on_parse.set(on_parse)
    try:
        with scoped(Where.PARSER):
            yield
    finally:
        _on_parse.reset(token)


def _exec_stock_main(train: Callable[[SimpleNamespace], Any]) -> None:
    code = compile(_stock_main_block(), importlib.util.find_spec(STOCK_MODULE).origin, "exec")
    exec(code, {"__name__": "__main__", "argparse": argparse, "datetime": datetime, "train": train})  # noqa: S102


def stock_parser() -> argparse.ArgumentParser:
    """OpenRLHF 0.11.2's own ``train_ppo_ray`` parser, as its ``__main__`` block builds it."""

    def capture(parser):
        raise _ParserCaptured(parser)

    try:
        with _hooked_parse_args(capture):
            _exec_stock_main(train=lambda args: None)
    except _ParserCaptured as captured:
        return captured.parser
    raise RuntimeError("OpenRLHF's __main__ block did not build a parser")


def build_parser() -> argparse.ArgumentParser:
    """The stock parser, extended (for docs, tests and the flag table)."""
    return extend_parser(stock_parser())


def run_stock_main(argv: Sequence[str], train: Callable[[SimpleNamespace], Any]) -> None:
    """Parse ``argv`` with the extended stock parser, run stock validation, then ``train(args)``."""

    def parse(parser):
        extend_parser(parser)
        ns = parser.parse_args(list(argv))
        try:
            check_numeric_ranges(ns)
            return finalize_extensions(ns, explicit_dests(parser, argv))
        except (ConfigError, RangeError) as err:
            parser.error(str(err))

    validated: list[SimpleNamespace] = []
    try:
        with _hooked_parse_args(parse):
            _exec_stock_main(validated.append)
    except AssertionError as err:
        # OpenRLHF validates with bare asserts; turn them into one clear line and exit code 2.
        exit_with_error(str(err), code=2)
    args = validated[0]
    args.platform.adapt_validated(args)  # what stock validation set (with packing: flash attention)
    # Outside the try: an AssertionError raised while training is a failure, not a bad flag.
    train(args)


def exit_with_error(message: str, code: int) -> NoReturn:
    """One line on stderr, as argparse words its errors, and exit ``code``."""
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


def resolve_train_config(flags: Sequence[str]) -> SimpleNamespace:
    """The training configuration ``flags`` resolve to, validated by the training CLI (no Ray)."""
    captured: list[SimpleNamespace] = []
    run_stock_main(list(flags), captured.append)
    return captured[0]


def dump_config(args: SimpleNamespace) -> str:
    return json.dumps(config_to_dict(args), indent=2, sort_keys=True, default=str)
