"""The legacy flat flag spellings, on OpenRLHF 0.11.2's dotted ``train_ppo_ray`` parser.

OpenRLHF 0.10.2 renamed every ``train_ppo_ray`` flag to a dotted name (``--actor_learning_rate`` ->
``--actor.adam.lr``); :data:`LEGACY_RELEASE` is the last release with flat ones. Each of its flags
(``tests/data/openrlhf_0.10.1.post2_train_ppo_ray_flags.tsv``), and the few of older releases that
published scripts still pass, is one of:

- **renamed**: the 0.11.2 flag's own action under the old name: :data:`LEGACY_ALIASES`, plus the
  automatic rule that ``--a.b_c`` also answers to ``--a_b_c`` (:func:`legacy_alias_table`);
- **shared**: one old flag set the actor and the critic (or the reference and reward models)
  alike, where 0.11.2 has one flag each: it sets all of them (:data:`LEGACY_SHARED`);
- **converted**: the meaning changed shape: a switch that became a choice
  (:data:`LEGACY_CONSTANTS`), the vLLM importance-sampling switch + type that became level + mode
  (:data:`IS_CORRECTION_TYPES`);
- **ignored**: it had no effect in its last release either, or names what is now the default
  (:data:`LEGACY_NO_OP_FLAGS`);
- **refused**: no 0.11.2 equivalent: a one-line error says what to do instead (:data:`LEGACY_REFUSED`).
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

LEGACY_RELEASE = "0.10.1.post2"

# Renamed flags whose name is not simply the new dotted name with "." replaced by "_" (those are
# added automatically, see legacy_alias_table). Flags of LEGACY_RELEASE, older ones (prompt_max_len,
# generate_max_len: 0.9.0 and before) and loss_agg_mode (no release: the papers' scripts).
LEGACY_ALIASES: dict[str, str] = {
    "advantage_estimator": "algo.advantage.estimator",
    "n_samples_per_prompt": "rollout.n_samples_per_prompt",
    "init_kl_coef": "algo.kl.init_coef",
    "kl_target": "algo.kl.target",
    "kl_horizon": "algo.kl.horizon",
    "use_kl_loss": "algo.kl.use_loss",
    "kl_estimator": "algo.kl.estimator",
    "eps_clip": "actor.eps_clip",
    "eps_clip_low_high": "actor.eps_clip_low_high",
    "dual_clip": "actor.dual_clip",
    "value_clip": "critic.value_clip",
    "temperature": "rollout.temperature",
    "top_p": "rollout.top_p",
    "micro_train_batch_size": "train.micro_batch_size",
    "train_batch_size": "train.batch_size",
    "rollout_batch_size": "rollout.batch_size",
    "micro_rollout_batch_size": "rollout.micro_batch_size",
    "vllm_generate_batch_size": "rollout.vllm_generate_batch_size",
    "prompt_max_len": "ext.prompt_max_len",
    "generate_max_len": "rollout.max_new_tokens",
    "max_new_tokens": "rollout.max_new_tokens",
    "pretrain": "actor.model_name_or_path",
    "reward_pretrain": "reward.model_name_or_path",
    "critic_pretrain": "critic.model_name_or_path",
    "value_head_prefix": "ds.value_head_prefix",
    "prompt_data": "data.prompt_dataset",
    "prompt_data_probs": "data.prompt_probs",
    "prompt_split": "data.prompt_split",
    "input_key": "data.input_key",
    "label_key": "data.label_key",
    "input_template": "data.input_template",
    "apply_chat_template": "data.apply_chat_template",
    "max_samples": "data.max_samples",
    "max_len": "data.max_len",
    "disable_fast_tokenizer": "data.disable_fast_tokenizer",
    "dataloader_num_workers": "data.dataloader_num_workers",
    "image_key": "data.image_key",
    "max_images_per_prompt": "data.max_images_per_prompt",
    "freeze_visual_encoder": "actor.freeze_visual_encoder",
    "max_epochs": "train.max_epochs",
    "num_episodes": "train.num_episodes",
    "remote_rm_url": "reward.remote_url",
    "overlong_buffer_len": "reward.overlong_buffer_len",
    "overlong_penalty_factor": "reward.overlong_penalty_factor",
    "stop_properly_penalty_coef": "reward.stop_properly_penalty_coef",
    "dynamic_filtering": "algo.dynamic_filtering_enable",
    "dynamic_filtering_reward_range": "algo.dynamic_filtering_range",
    "gamma": "algo.advantage.gamma",
    "lambd": "algo.advantage.lambd",
    "no_advantage_std_norm": "algo.advantage.no_std_norm",
    "vllm_is_truncated_threshold": "algo.advantage.is_correction_threshold",
    "policy_loss_type": "actor.policy_loss_type",
    "loss_agg_mode": "actor.loss_agg_mode",
    "entropy_loss_coef": "actor.entropy_coef",
    "aux_loss_coef": "actor.aux_loss_coef",
    "actor_learning_rate": "actor.adam.lr",
    "critic_learning_rate": "critic.adam.lr",
    "seed": "train.seed",
    "zero_stage": "ds.zero_stage",
    "zpg": "ds.zpg",
    "adam_offload": "ds.adam_offload",
    "deepcompile": "ds.deepcompile",
    "param_dtype": "ds.param_dtype",
    "grad_accum_dtype": "ds.grad_accum_dtype",
    "overlap_comm": "ds.overlap_comm",
    "use_liger_kernel": "ds.use_liger_kernel",
    "use_ds_universal_ckpt": "ds.use_universal_ckpt",
    "load_in_4bit": "ds.load_in_4bit",
    "lora_rank": "ds.lora.rank",
    "lora_alpha": "ds.lora.alpha",
    "lora_dropout": "ds.lora.dropout",
    "target_modules": "ds.lora.target_modules",
    "ring_attn_size": "ds.ring_attn_size",
    "ring_head_stride": "ds.ring_attn_head_stride",
    "gradient_checkpointing": "actor.gradient_checkpointing_enable",
    "gradient_checkpointing_use_reentrant": "actor.gradient_checkpointing_reentrant",
    "packing_samples": "ds.packing_samples",
    "attn_implementation": "ds.attn_implementation",
    "colocate_all_models": "train.colocate_all",
    "colocate_actor_ref": "train.colocate_actor_ref",
    "colocate_critic_reward": "train.colocate_critic_reward",
    "deepspeed_enable_sleep": "ds.enable_sleep",
    "vllm_sync_backend": "vllm.sync_backend",
    "enforce_eager": "vllm.enforce_eager",
    "enable_prefix_caching": "vllm.enable_prefix_caching",
    "save_path": "ckpt.output_dir",
    "ckpt_path": "ckpt.path",
    "save_steps": "ckpt.save_steps",
    "save_hf_ckpt": "ckpt.save_hf",
    "disable_ds_ckpt": "ckpt.disable_ds",
    "max_ckpt_num": "ckpt.max_num",
    "max_ckpt_mem": "ckpt.max_mem",
    "load_checkpoint": "ckpt.load_enable",
    "best_metric_key": "ckpt.best_metric_key",
    "save_value_network": "critic.save_value_network",
    "logging_steps": "logger.logging_steps",
    "eval_steps": "eval.steps",
    "eval_dataset": "eval.dataset",
    "eval_temperature": "eval.temperature",
    "eval_n_samples_per_prompt": "eval.n_samples_per_prompt",
    "use_wandb": "logger.wandb.key",
    "wandb_org": "logger.wandb.org",
    "wandb_group": "logger.wandb.group",
    "wandb_project": "logger.wandb.project",
    "wandb_run_name": "logger.wandb.run_name",
    "use_tensorboard": "logger.tensorboard_dir",
    "normalize_reward": "reward.normalize_enable",
    "reward_clip_range": "reward.clip_range",
    "agent_func_path": "train.agent_func_path",
    "async_train": "train.async_enable",
    "async_queue_size": "train.async_queue_size",
    "partial_rollout": "train.partial_rollout_enable",
    "enable_ema": "train.enable_ema",
    "ema_beta": "train.ema_beta",
    "full_determinism": "train.full_determinism_enable",
    "use_dynamic_batch": "train.dynamic_batch_enable",
    "freezing_actor_steps": "critic.freezing_steps",
}

# One 0.10 flag read by both models' set-up (ppo_actor.py and ppo_critic.py read args.l2, ...;
# launcher.py offloads the reference and the reward model on --ref_reward_offload): it sets each.
LEGACY_SHARED: dict[str, tuple[str, ...]] = {
    "l2": ("actor.adam.weight_decay", "critic.adam.weight_decay"),
    "adam_betas": ("actor.adam.betas", "critic.adam.betas"),
    "max_norm": ("actor.max_norm", "critic.max_norm"),
    "lr_scheduler": ("actor.lr_scheduler", "critic.lr_scheduler"),
    "lr_warmup_ratio": ("actor.lr_warmup_ratio", "critic.lr_warmup_ratio"),
    "ref_reward_offload": ("ref.offload", "reward.offload"),
}

# Switches that became one value of a choice: flag -> (dest, value). --use_kl_estimator_k3 is
# OpenRLHF 0.6.0's (0.6.1 replaced it by --kl_estimator).
LEGACY_CONSTANTS: dict[str, tuple[str, str]] = {
    "use_kl_estimator_k3": ("algo.kl.estimator", "k3"),
}

# 0.10's --enable_vllm_is_correction with --vllm_is_correction_type T (default tis) ->
# (--algo.advantage.is_correction_level, --algo.advantage.is_correction_mode), gating 'ratio'
# (0.11.2's default): tis clamps each token's ratio, icepop zeroes the tokens whose ratio leaves the
# band, seq-mask-tis zeroes the sequences whose geometric-mean ratio leaves it; the two masks keep
# the per-token ratio as the weight, as 0.11.2's 'mask' mode does. The type alone did nothing.
IS_ENABLE_FLAG = "enable_vllm_is_correction"
IS_TYPE_FLAG = "vllm_is_correction_type"
IS_CORRECTION_TYPES: dict[str, tuple[str, str]] = {
    "tis": ("token", "clip"),
    "icepop": ("token", "mask"),
    "seq-mask-tis": ("seq", "mask"),
}
IS_LEVEL, IS_MODE = "algo.advantage.is_correction_level", "algo.advantage.is_correction_mode"


class NoOp(NamedTuple):
    takes_value: bool
    why: str


# Accepted and ignored. ptx_coef, perf, actor_init_on_gpu: parsed but read nowhere in
# LEGACY_RELEASE; torch_compile: the same in 0.6.2 - 0.7.0, its only releases.
LEGACY_NO_OP_FLAGS: dict[str, NoOp] = {
    "bf16": NoOp(False, "bf16 is the default `--ds.param_dtype`"),
    "flash_attn": NoOp(False, "flash_attention_2 is the default `--ds.attn_implementation`"),
    "ptx_coef": NoOp(True, f"no effect since the PPO-ptx loss was removed (OpenRLHF 0.7.1), in {LEGACY_RELEASE} too"),
    "perf": NoOp(False, f"no effect in {LEGACY_RELEASE}"),
    "actor_init_on_gpu": NoOp(False, f"no effect in {LEGACY_RELEASE}"),
    "torch_compile": NoOp(False, "no effect in any release that had it (0.6.2 - 0.7.0)"),
}

# Flags with no 0.11.2 equivalent -> the rest of the one-line error after "--flag: ".
_NO_PTX = "removed in OpenRLHF 0.7.1 with the PPO-ptx loss (no replacement); drop it"
LEGACY_REFUSED: dict[str, str] = {
    "pretrain_data": _NO_PTX,
    "pretrain_data_probs": _NO_PTX,
    "pretrain_split": _NO_PTX,
}


def legacy_alias_table(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Every renamed legacy flag name -> the dest it sets (explicit table + ``a.b_c`` -> ``a_b_c``)."""
    taken = set(parser._option_string_actions)
    table = {}
    for action in parser._actions:
        if "." in action.dest:
            flat = action.dest.replace(".", "_")
            if f"--{flat}" not in taken:
                table[flat] = action.dest
    table.update(LEGACY_ALIASES)
    return {alias: dest for alias, dest in sorted(table.items()) if f"--{alias}" not in taken}


def legacy_flag_table(parser: argparse.ArgumentParser) -> dict[str, tuple[str, str]]:
    """Every legacy flag name -> (what it does on the 0.11.2 parser, its kind), for docs/flags.md."""
    table = {alias: (f"`--{dest}`", "renamed" if alias in LEGACY_ALIASES else "")
             for alias, dest in legacy_alias_table(parser).items()}
    table.update({flag: (" and ".join(f"`--{d}`" for d in dests), "shared") for flag, dests in LEGACY_SHARED.items()})
    table.update({flag: (f"`--{dest} {value}`", "converted") for flag, (dest, value) in LEGACY_CONSTANTS.items()})
    table[IS_ENABLE_FLAG] = (f"`--{IS_LEVEL} L --{IS_MODE} M`, L and M from `--{IS_TYPE_FLAG}` (default tis)",
                             "converted")
    table[IS_TYPE_FLAG] = (f"with `--{IS_ENABLE_FLAG}`, (L, M): "
                           + ", ".join(f"{t} ({level}, {mode})" for t, (level, mode) in IS_CORRECTION_TYPES.items())
                           + "; alone nothing, as in 0.10", "converted")
    table.update({flag: (no_op.why, "ignored") for flag, no_op in LEGACY_NO_OP_FLAGS.items()})
    table.update({flag: (why, "refused") for flag, why in LEGACY_REFUSED.items()})
    return dict(sorted(table.items()))


def add_legacy_flags(parser: argparse.ArgumentParser) -> None:
    """Add every legacy flag to ``parser`` (hidden from --help; docs/flags.md lists them)."""
    by_dest = {a.dest: a for a in parser._actions}
    for alias, dest in legacy_alias_table(parser).items():
        # A clone of the real action under another option string; SUPPRESS keeps it from
        # overwriting the real default.
        clone = copy.copy(by_dest[dest])
        clone.option_strings = [f"--{alias}"]
        clone.default = argparse.SUPPRESS
        clone.help = argparse.SUPPRESS
        clone.required = False
        parser._add_action(clone)
    for flag, dests in LEGACY_SHARED.items():
        first = by_dest[dests[0]]  # type, nargs and choices: the same for each dest
        _add_hidden(parser, flag, action=_SetAll, dest=dests[0], dests=dests, type=first.type, nargs=first.nargs,
                    const=first.const, choices=first.choices)
    for flag, (dest, value) in LEGACY_CONSTANTS.items():
        _add_hidden(parser, flag, action="store_const", dest=dest, const=value)
    _add_hidden(parser, IS_ENABLE_FLAG, action=_LegacyISCorrection, dest=IS_LEVEL, dests=(IS_LEVEL, IS_MODE), nargs=0)
    # The type alone sets nothing (as in 0.10); with the switch, the switch counts for the mode.
    _add_hidden(parser, IS_TYPE_FLAG, action=_LegacyISCorrection, dest=IS_MODE, dests=(),
                choices=list(IS_CORRECTION_TYPES))
    for flag, no_op in LEGACY_NO_OP_FLAGS.items():
        _add_hidden(parser, flag, action=_NoOp, nargs=1 if no_op.takes_value else 0)
    for flag, why in LEGACY_REFUSED.items():
        # nargs "*": the refusal, not "expected one argument", whatever follows the flag.
        _add_hidden(parser, flag, action=_Refused, nargs="*", message=f"--{flag}: {why}")
    _resolve_after_parsing(parser, _resolve_is_correction)


def _add_hidden(parser: argparse.ArgumentParser, flag: str, **kwargs: Any) -> None:
    parser.add_argument(f"--{flag}", default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)


def dests_of(action: argparse.Action) -> tuple[str, ...]:
    """Every dest a flag of ``action`` sets, to count for the user's (explicit) settings: its dest, or
    the ``dests`` of a legacy flag that sets several."""
    return action.dests if isinstance(action, _SetsSeveral) else (action.dest,)


class _SetsSeveral(argparse.Action):
    """An action whose flag sets ``dests`` (argparse knows one dest per action: the first, for its default)."""

    def __init__(self, *args: Any, dests: tuple[str, ...], **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.dests = dests


class _SetAll(_SetsSeveral):
    """One value into several dests (a switch's: its const)."""

    def __call__(self, parser, namespace, values, option_string=None):
        for dest in self.dests:
            setattr(namespace, dest, self.const if self.nargs == 0 else values)


class _NoOp(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        pass


class _Refused(argparse.Action):
    def __init__(self, *args: Any, message: str, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.message = message

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(self.message)


# The two IS-correction flags combine in either order, so they are collected while parsing (under
# the 0.11.2 dest each one names) and resolved once it is done.
_IS_GIVEN = "_legacy_is_correction"


class _LegacyISCorrection(_SetsSeveral):
    def __call__(self, parser, namespace, values, option_string=None):
        vars(namespace).setdefault(_IS_GIVEN, {})[self.dest] = values


def _resolve_is_correction(namespace: argparse.Namespace) -> None:
    given = vars(namespace).pop(_IS_GIVEN, {})
    if IS_LEVEL in given:  # --enable_vllm_is_correction
        level, mode = IS_CORRECTION_TYPES[given.get(IS_MODE, "tis")]
        setattr(namespace, IS_LEVEL, level)
        setattr(namespace, IS_MODE, mode)


def _resolve_after_parsing(parser: argparse.ArgumentParser,
                           resolve: Callable[[argparse.Namespace], None]) -> None:
    """Run ``resolve`` on the namespace of every parse of ``parser`` (``parse_args`` goes through
    ``parse_known_args``), before anything reads it."""
    parse_known_args = parser.parse_known_args

    def parse_and_resolve(args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None):
        parsed, extras = parse_known_args(args, namespace)
        resolve(parsed)
        return parsed, extras

    parser.parse_known_args = parse_and_resolve
