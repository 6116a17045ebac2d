"""Our flags on OpenRLHF's ``train_ppo_ray`` parser: more choices for the estimator / policy loss /
loss aggregation / parameter dtype, the ``--ext.*`` grid, reward, tracking and fault flags, the
legacy flat spellings (:mod:`openrlhf_ext.cli.legacy_flags`) and ``--print_config``."""

from __future__ import annotations

import argparse
import types
from collections.abc import Sequence

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
)
from openrlhf_ext.cli.errors import PROG, one_line_error
from openrlhf_ext.cli.legacy_flags import add_legacy_flags
from openrlhf_ext.data.templates import TEMPLATE_NAMES
from openrlhf_ext.job.restarts import DEFAULT_MAX_RESTARTS

NEW_PARAM_DTYPES = ("fp32",)  # the CPU default where bf16 would be emulated

ON_OFF = ("on", "off")
# Our on/off flags, their value when neither the user nor the preset sets them.
ON_OFF_DEFAULTS = {"ext.signed_reward": False, "ext.overlong_filter": False, "ext.reward_fallback": True,
                   "ext.strict_format": False}


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


def extend_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add our choices and flags to OpenRLHF's parser, which then words its errors in one line."""
    _extend_choices(parser, "algo.advantage.estimator", [*PRESETS, *ESTIMATOR_ALIASES])
    _extend_choices(parser, "actor.policy_loss_type", POLICY_LOSS_TYPES)
    _extend_choices(parser, "actor.loss_agg_mode", LOSS_AGG_MODES)
    _extend_choices(parser, "ds.param_dtype", NEW_PARAM_DTYPES)
    _add_ext_arguments(parser)
    add_legacy_flags(parser)
    parser.prog = PROG
    parser.error = types.MethodType(one_line_error, parser)
    return parser
