"""Every flag of OpenRLHF's last release with flat flags, resolved on the 0.11.2 CLI (cli/legacy_flags.py).

One table row per legacy flag (several for the conversions): the flags given and the 0.11.2 values
they resolve to, through the whole CLI (our parser, our validation, OpenRLHF's). The release's flag
list is tests/data/openrlhf_0.10.1.post2_train_ppo_ray_flags.tsv (scripts/legacy_flag_list.py).
"""

from __future__ import annotations

import ast
import csv
import functools
import json
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from openrlhf_ext.cli.legacy_flags import (
    IS_ENABLE_FLAG,
    IS_LEVEL,
    IS_MODE,
    IS_TYPE_FLAG,
    LEGACY_ALIASES,
    LEGACY_CONSTANTS,
    LEGACY_NO_OP_FLAGS,
    LEGACY_REFUSED,
    LEGACY_RELEASE,
    LEGACY_SHARED,
    legacy_alias_table,
)
from openrlhf_ext.cli.stock_main import stock_parser
from openrlhf_ext.cli.train_config import build_parser, resolve_train_config
from openrlhf_ext.cli.train_ppo_ray import main
from openrlhf_ext.reporting.records import config_to_dict

FLAG_LIST = Path(__file__).parent / "data" / f"openrlhf_{LEGACY_RELEASE}_train_ppo_ray_flags.tsv"
# Dotted, so that the rows of --pretrain, --prompt_data and --remote_rm_url show their own effect;
# a fixed run name, so that two resolutions compare equal; an engine, without which packing is refused
# (OpenRLHF packs only with vLLM generation).
BASE = ["--actor.model_name_or_path", "/models/m", "--data.prompt_dataset", "/data/p.jsonl",
        "--reward.remote_url", "/rm/reward.py", "--logger.wandb.run_name", "run", "--vllm.num_engines", "1"]
GROUPS = ["--algo.advantage.estimator", "group_norm", "--rollout.n_samples_per_prompt", "4"]


@pytest.fixture(autouse=True)
def on_the_cuda_platform(monkeypatch):
    """The flags as OpenRLHF's GPU scripts run them: the CPU platform refuses or rewrites some of
    them (tests/test_cpu_runtime.py), which is not what this table is about."""
    monkeypatch.setenv("OPENRLHF_EXT_PLATFORM", "cuda")


class Row(NamedTuple):
    flags: list[str]  # the legacy flag first, then its value(s) and what validation needs with it
    expect: dict[str, Any]  # 0.11.2 dest -> resolved value; empty for an ignored flag


def renamed(flag: str, *values: str, dest: str, value: Any, needs: tuple[str, ...] = ()) -> Row:
    return Row([flag, *values, *needs], {dest: value})


def switch(flag: str, dest: str, needs: tuple[str, ...] = ()) -> Row:
    return Row([flag, *needs], {dest: True})


ROWS: list[Row] = [
    # Ray and vLLM
    renamed("--ref_num_nodes", "2", dest="ref.num_nodes", value=2),
    renamed("--ref_num_gpus_per_node", "4", dest="ref.num_gpus_per_node", value=4),
    renamed("--reward_num_nodes", "2", dest="reward.num_nodes", value=2),
    renamed("--reward_num_gpus_per_node", "4", dest="reward.num_gpus_per_node", value=4),
    switch("--colocate_actor_ref", "train.colocate_actor_ref"),
    renamed("--actor_num_nodes", "2", dest="actor.num_nodes", value=2),
    renamed("--actor_num_gpus_per_node", "4", dest="actor.num_gpus_per_node", value=4),
    renamed("--critic_num_nodes", "2", dest="critic.num_nodes", value=2),
    renamed("--critic_num_gpus_per_node", "4", dest="critic.num_gpus_per_node", value=4),
    switch("--colocate_critic_reward", "train.colocate_critic_reward"),
    switch("--colocate_all_models", "train.colocate_all"),
    renamed("--vllm_num_engines", "2", dest="vllm.num_engines", value=2),
    renamed("--vllm_tensor_parallel_size", "2", dest="vllm.tensor_parallel_size", value=2),
    renamed("--vllm_sync_backend", "gloo", dest="vllm.sync_backend", value="gloo"),
    switch("--vllm_sync_with_ray", "vllm.sync_with_ray"),
    switch("--enable_prefix_caching", "vllm.enable_prefix_caching"),
    switch("--enforce_eager", "vllm.enforce_eager"),
    switch("--vllm_enable_sleep", "vllm.enable_sleep", needs=("--colocate_all_models",)),
    renamed("--vllm_gpu_memory_utilization", "0.5", dest="vllm.gpu_memory_utilization", value=0.5),
    # vLLM importance-sampling correction: switch + type -> level + mode, in either order
    Row([f"--{IS_ENABLE_FLAG}"], {"algo.advantage.is_correction_level": "token",
                                  "algo.advantage.is_correction_mode": "clip"}),
    Row([f"--{IS_ENABLE_FLAG}", f"--{IS_TYPE_FLAG}", "icepop"],
        {"algo.advantage.is_correction_level": "token", "algo.advantage.is_correction_mode": "mask"}),
    Row([f"--{IS_TYPE_FLAG}", "seq-mask-tis", f"--{IS_ENABLE_FLAG}"],
        {"algo.advantage.is_correction_level": "seq", "algo.advantage.is_correction_mode": "mask"}),
    Row([f"--{IS_TYPE_FLAG}", "tis"],  # the type alone did nothing: stock level and mode
        {"algo.advantage.is_correction_level": "off", "algo.advantage.is_correction_mode": "mask"}),
    renamed("--vllm_is_truncated_threshold", "0.8", "2.0", dest="algo.advantage.is_correction_threshold",
            value=[0.8, 2.0]),
    # async
    switch("--async_train", "train.async_enable"),
    renamed("--async_queue_size", "2", dest="train.async_queue_size", value=2),
    switch("--partial_rollout", "train.partial_rollout_enable", needs=("--async_train",)),
    # checkpoints
    renamed("--eval_steps", "10", dest="eval.steps", value=10),
    renamed("--save_steps", "10", dest="ckpt.save_steps", value=10),
    renamed("--logging_steps", "5", dest="logger.logging_steps", value=5),
    renamed("--ckpt_path", "/ckpt", dest="ckpt.path", value="/ckpt"),
    switch("--save_hf_ckpt", "ckpt.save_hf"),
    switch("--disable_ds_ckpt", "ckpt.disable_ds"),
    renamed("--max_ckpt_num", "5", dest="ckpt.max_num", value=5),
    renamed("--max_ckpt_mem", "100", dest="ckpt.max_mem", value=100.0),
    switch("--load_checkpoint", "ckpt.load_enable"),
    renamed("--best_metric_key", "eval_default_pass1", dest="ckpt.best_metric_key", value="eval_default_pass1"),
    switch("--use_ds_universal_ckpt", "ds.use_universal_ckpt"),
    # DeepSpeed
    renamed("--local_rank", "0", dest="local_rank", value=0),  # the stock name
    renamed("--zero_stage", "3", dest="ds.zero_stage", value=3),
    switch("--gradient_checkpointing", "actor.gradient_checkpointing_enable"),
    switch("--deepcompile", "ds.deepcompile"),
    renamed("--param_dtype", "fp16", dest="ds.param_dtype", value="fp16"),
    switch("--enable_ema", "train.enable_ema"),
    renamed("--ema_beta", "0.99", dest="train.ema_beta", value=0.99),
    renamed("--zpg", "2", dest="ds.zpg", value=2),
    switch("--adam_offload", "ds.adam_offload"),
    renamed("--attn_implementation", "sdpa", dest="ds.attn_implementation", value="sdpa"),
    switch("--use_liger_kernel", "ds.use_liger_kernel"),
    renamed("--grad_accum_dtype", "fp32", dest="ds.grad_accum_dtype", value="fp32"),
    switch("--overlap_comm", "ds.overlap_comm"),
    switch("--gradient_checkpointing_use_reentrant", "actor.gradient_checkpointing_reentrant"),
    switch("--disable_fast_tokenizer", "data.disable_fast_tokenizer"),
    renamed("--dataloader_num_workers", "2", dest="data.dataloader_num_workers", value=2),
    switch("--deepspeed_enable_sleep", "ds.enable_sleep"),
    renamed("--ds_tensor_parallel_size", "2", dest="ds.tensor_parallel_size", value=2),
    switch("--packing_samples", "ds.packing_samples"),
    switch("--use_dynamic_batch", "train.dynamic_batch_enable"),
    renamed("--rollout_max_tokens_per_gpu", "8192", dest="rollout.max_tokens_per_gpu", value=8192),
    renamed("--train_max_tokens_per_gpu", "8192", dest="train.max_tokens_per_gpu", value=8192),
    # LoRA
    switch("--load_in_4bit", "ds.load_in_4bit"),
    renamed("--lora_rank", "8", dest="ds.lora.rank", value=8),
    renamed("--lora_alpha", "32", dest="ds.lora.alpha", value=32),
    renamed("--target_modules", "q_proj", "v_proj", dest="ds.lora.target_modules", value=["q_proj", "v_proj"]),
    renamed("--lora_dropout", "0.1", dest="ds.lora.dropout", value=0.1),
    # PPO
    renamed("--save_path", "/out", dest="ckpt.output_dir", value="/out"),
    renamed("--num_episodes", "3", dest="train.num_episodes", value=3),
    renamed("--rollout_batch_size", "64", dest="rollout.batch_size", value=64),
    renamed("--vllm_generate_batch_size", "512", dest="rollout.vllm_generate_batch_size", value=512),
    renamed("--micro_rollout_batch_size", "4", dest="rollout.micro_batch_size", value=4),
    renamed("--max_epochs", "2", dest="train.max_epochs", value=2),
    renamed("--max_len", "4096", dest="data.max_len", value=4096),
    renamed("--max_new_tokens", "1024", dest="rollout.max_new_tokens", value=1024),
    renamed("--max_samples", "1000", dest="data.max_samples", value=1000),
    Row(["--max_norm", "0.5"], {"actor.max_norm": 0.5, "critic.max_norm": 0.5}),
    Row(["--l2", "0.01"], {"actor.adam.weight_decay": 0.01, "critic.adam.weight_decay": 0.01}),
    renamed("--eps_clip", "0.1", dest="actor.eps_clip", value=0.1),
    renamed("--eps_clip_low_high", "0.2", "0.28", dest="actor.eps_clip_low_high", value=[0.2, 0.28]),
    renamed("--dual_clip", "3", dest="actor.dual_clip", value=3.0),
    renamed("--value_clip", "0.2", dest="critic.value_clip", value=0.2),
    renamed("--lambd", "0.95", dest="algo.advantage.lambd", value=0.95),
    renamed("--gamma", "0.99", dest="algo.advantage.gamma", value=0.99),
    renamed("--micro_train_batch_size", "2", dest="train.micro_batch_size", value=2),
    renamed("--train_batch_size", "64", dest="train.batch_size", value=64),
    switch("--normalize_reward", "reward.normalize_enable"),
    renamed("--top_p", "0.9", dest="rollout.top_p", value=0.9),
    renamed("--temperature", "0.6", dest="rollout.temperature", value=0.6),
    renamed("--seed", "7", dest="train.seed", value=7),
    switch("--full_determinism", "train.full_determinism_enable"),
    renamed("--freezing_actor_steps", "5", dest="critic.freezing_steps", value=5),
    renamed("--n_samples_per_prompt", "4", dest="rollout.n_samples_per_prompt", value=4),
    switch("--save_value_network", "critic.save_value_network"),
    renamed("--actor_learning_rate", "5e-7", dest="actor.adam.lr", value=5e-7),
    renamed("--critic_learning_rate", "5e-6", dest="critic.adam.lr", value=5e-6),
    Row(["--lr_warmup_ratio", "0.1"], {"actor.lr_warmup_ratio": 0.1, "critic.lr_warmup_ratio": 0.1}),
    Row(["--lr_scheduler", "constant"], {"actor.lr_scheduler": "constant", "critic.lr_scheduler": "constant"}),
    renamed("--kl_target", "0.1", dest="algo.kl.target", value=0.1),
    renamed("--kl_horizon", "500", dest="algo.kl.horizon", value=500),
    renamed("--init_kl_coef", "0.001", dest="algo.kl.init_coef", value=0.001),
    renamed("--policy_loss_type", "gspo", dest="actor.policy_loss_type", value="gspo"),
    renamed("--kl_estimator", "k3", dest="algo.kl.estimator", value="k3"),
    renamed("--aux_loss_coef", "0.01", dest="actor.aux_loss_coef", value=0.01),
    renamed("--entropy_loss_coef", "0.001", dest="actor.entropy_coef", value=0.001),
    Row(["--adam_betas", "0.9", "0.99"], {"actor.adam.betas": [0.9, 0.99], "critic.adam.betas": [0.9, 0.99]}),
    renamed("--reward_clip_range", "-5", "5", dest="reward.clip_range", value=[-5.0, 5.0]),
    # Reinforce / GRPO
    renamed("--advantage_estimator", "rloo", dest="algo.advantage.estimator", value="rloo",
            needs=("--n_samples_per_prompt", "4")),
    switch("--use_kl_loss", "algo.kl.use_loss"),
    switch("--no_advantage_std_norm", "algo.advantage.no_std_norm"),
    renamed("--overlong_buffer_len", "512", dest="reward.overlong_buffer_len", value=512.0),
    renamed("--overlong_penalty_factor", "0.5", dest="reward.overlong_penalty_factor", value=0.5),
    renamed("--stop_properly_penalty_coef", "-0.5", dest="reward.stop_properly_penalty_coef", value=-0.5),
    # context parallel
    renamed("--ring_attn_size", "2", dest="ds.ring_attn_size", value=2),
    renamed("--ring_head_stride", "2", dest="ds.ring_attn_head_stride", value=2),
    # models
    renamed("--pretrain", "/models/p", dest="actor.model_name_or_path", value="/models/p"),
    renamed("--reward_pretrain", "/models/rm", dest="reward.model_name_or_path", value="/models/rm"),
    renamed("--remote_rm_url", "/rm/other.py", dest="reward.remote_url", value=["/rm/other.py"]),
    renamed("--critic_pretrain", "/models/c", dest="critic.model_name_or_path", value="/models/c"),
    renamed("--value_head_prefix", "value_head", dest="ds.value_head_prefix", value="value_head"),
    Row(["--ref_reward_offload"], {"ref.offload": True, "reward.offload": True}),
    renamed("--agent_func_path", "/a/agent.py", dest="train.agent_func_path", value="/a/agent.py"),
    # data
    renamed("--prompt_data", "/data/q.jsonl", dest="data.prompt_dataset", value="/data/q.jsonl"),
    renamed("--prompt_data_probs", "1.0", dest="data.prompt_probs", value="1.0"),
    renamed("--prompt_split", "test", dest="data.prompt_split", value="test"),
    renamed("--eval_dataset", "/data/e.jsonl", dest="eval.dataset", value="/data/e.jsonl"),
    renamed("--eval_split", "test", dest="eval.split", value="test"),
    renamed("--eval_temperature", "0.8", dest="eval.temperature", value=0.8),
    renamed("--eval_n_samples_per_prompt", "2", dest="eval.n_samples_per_prompt", value=2),
    renamed("--input_key", "problem", dest="data.input_key", value="problem"),
    renamed("--label_key", "answer", dest="data.label_key", value="answer"),
    renamed("--input_template", "Q: {}", dest="data.input_template", value="Q: {}"),
    switch("--apply_chat_template", "data.apply_chat_template"),
    # loggers
    renamed("--use_wandb", "KEY", dest="logger.wandb.key", value="KEY"),
    renamed("--wandb_org", "org", dest="logger.wandb.org", value="org"),
    renamed("--wandb_group", "group", dest="logger.wandb.group", value="group"),
    renamed("--wandb_project", "proj", dest="logger.wandb.project", value="proj"),
    renamed("--wandb_run_name", "legacy_run", dest="logger.wandb.run_name", value="legacy_run"),
    renamed("--use_tensorboard", "/tb", dest="logger.tensorboard_dir", value="/tb"),
    # dynamic filtering
    switch("--dynamic_filtering", "algo.dynamic_filtering_enable", needs=tuple(GROUPS)),
    renamed("--dynamic_filtering_reward_range", "0.1", "0.9", dest="algo.dynamic_filtering_range", value=[0.1, 0.9]),
    # vision-language models (no critic: a critic-free estimator)
    renamed("--image_key", "img", dest="data.image_key", value="img"),
    renamed("--max_images_per_prompt", "2", dest="data.max_images_per_prompt", value=2, needs=tuple(GROUPS)),
    switch("--freeze_visual_encoder", "actor.freeze_visual_encoder"),
    # accepted and ignored: no effect in LEGACY_RELEASE either
    Row(["--ptx_coef", "0.1"], {}),
    Row(["--perf"], {}),
    Row(["--actor_init_on_gpu"], {}),
    # older releases: removed before LEGACY_RELEASE
    Row(["--prompt_max_len", "1024", "--generate_max_len", "3000"],
        {"data.max_len": 4024, "rollout.max_new_tokens": 3000}),
    renamed("--generate_max_len", "3000", dest="rollout.max_new_tokens", value=3000),
    Row(["--use_kl_estimator_k3"], {"algo.kl.estimator": "k3"}),
    Row(["--bf16"], {}),
    Row(["--flash_attn"], {}),
    Row(["--torch_compile"], {}),
    # no OpenRLHF release: the flat spelling of a 0.11 flag that the papers' scripts use
    renamed("--loss_agg_mode", "seq-mean-token-mean", dest="actor.loss_agg_mode", value="seq-mean-token-mean"),
]
# Checked on the parser: the stock flag of the same name loads modelscope when the run starts.
PARSER_ONLY_ROWS = [switch("--use_ms", "use_ms")]
REFUSED_ROWS = [
    (["--pretrain_data", "/data/pt.jsonl"], "--pretrain_data: removed in OpenRLHF 0.7.1 with the PPO-ptx loss"),
    (["--pretrain_data_probs", "1.0"], "--pretrain_data_probs: removed in OpenRLHF 0.7.1 with the PPO-ptx loss"),
    (["--pretrain_split"], "--pretrain_split: removed in OpenRLHF 0.7.1 with the PPO-ptx loss"),
]


def dotted(config: Any, dest: str) -> Any:
    return functools.reduce(getattr, dest.split("."), config)


def as_list(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def resolved(flags: list[str]) -> dict:
    return json.loads(json.dumps(config_to_dict(resolve_train_config([*BASE, *flags])), default=str))


@pytest.mark.parametrize("row", ROWS, ids=lambda row: " ".join(row.flags))
def test_legacy_flag_resolves_to_its_0_11_2_value(row):
    config = resolve_train_config([*BASE, *row.flags])
    for dest, value in row.expect.items():
        assert as_list(dotted(config, dest)) == value, dest
    if not row.expect:  # ignored: the very configuration the same command line resolves to without it
        assert resolved(row.flags) == resolved([])
    elif len(row.expect) == 1:  # one dest: the flag is the user's setting of it (presets and profiles leave it)
        assert getattr(config.provenance, next(iter(row.expect))) == "user"


# The rows of a legacy flag that sets several 0.11.2 dests: the user's setting of each of them.
MULTI_DEST_ROWS = [row for row in ROWS if row.flags[0][2:] in LEGACY_SHARED or f"--{IS_ENABLE_FLAG}" in row.flags]


@pytest.mark.parametrize("row", MULTI_DEST_ROWS, ids=lambda row: " ".join(row.flags))
def test_every_dest_a_legacy_flag_sets_is_the_users(row):
    provenance = resolve_train_config([*BASE, *row.flags]).provenance
    assert {dest: getattr(provenance, dest) for dest in row.expect} == dict.fromkeys(row.expect, "user")


def test_multi_dest_rows_cover_every_shared_flag_and_the_is_correction_type_alone_sets_nothing():
    assert {row.flags[0][2:] for row in MULTI_DEST_ROWS} >= set(LEGACY_SHARED)
    provenance = resolve_train_config([*BASE, f"--{IS_TYPE_FLAG}", "tis"]).provenance
    assert {dest: getattr(provenance, dest) for dest in (IS_LEVEL, IS_MODE)} == {IS_LEVEL: "stock", IS_MODE: "stock"}


@pytest.mark.parametrize("row", PARSER_ONLY_ROWS, ids=lambda row: row.flags[0])
def test_legacy_flag_parses_to_its_0_11_2_value(row):
    namespace = build_parser().parse_args(row.flags)
    for dest, value in row.expect.items():
        assert getattr(namespace, dest) == value


@pytest.mark.parametrize(("flags", "message"), REFUSED_ROWS, ids=[flags[0] for flags, _ in REFUSED_ROWS])
def test_refused_legacy_flag_stops_with_one_line(capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        resolve_train_config([*BASE, *flags])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"python -m openrlhf_ext.cli.train_ppo_ray: error: {message}"), err


def release_flags() -> list[dict[str, str]]:
    with open(FLAG_LIST, encoding="utf-8") as f:
        return list(csv.DictReader((line for line in f if not line.startswith("#")), delimiter="\t"))


def test_the_table_holds_every_flag_of_the_release_and_every_legacy_table_entry():
    tested = {row.flags[0] for row in [*ROWS, *PARSER_ONLY_ROWS]} | {flags[0] for flags, _ in REFUSED_ROWS}
    listed = {flag["flag"] for flag in release_flags()}
    assert len(listed) == 144  # the file is the whole parser, not a part of it
    assert not listed - tested
    entries = {*LEGACY_ALIASES, *LEGACY_SHARED, *LEGACY_CONSTANTS, *LEGACY_NO_OP_FLAGS, *LEGACY_REFUSED,
               IS_ENABLE_FLAG, IS_TYPE_FLAG}
    assert not {f"--{name}" for name in entries} - tested


# Renamed flags whose 0.11.2 flag takes more than the release's did (every old command line still parses).
WIDENED = {"--vllm_is_truncated_threshold": "nargs 2 -> '+': 0.11.2 also takes a single HIGH bound"}


def test_renamed_flags_keep_their_release_meaning():
    """A renamed flag is the 0.11.2 action under the old name: the release's action, type, nargs and
    default must be the 0.11.2 flag's (else the flag needs a conversion, not a rename)."""
    stock = stock_parser()
    renames = legacy_alias_table(stock)
    by_dest = {a.dest: a for a in stock._actions}
    compared = 0
    for old in release_flags():
        name = old["flag"][2:]
        if name in renames:
            new = by_dest[renames[name]]
        elif old["flag"] in stock._option_string_actions:  # the same name in 0.11.2
            new = stock._option_string_actions[old["flag"]]
        else:
            continue  # shared, converted, ignored: their own rows say what they do
        action = {"store": "_StoreAction", "store_true": "_StoreTrueAction"}[old["action"]]
        assert type(new).__name__ == action, old["flag"]
        assert (new.type.__name__ if new.type else "") == old["type"], old["flag"]
        if old["flag"] not in WIDENED:
            assert str(new.nargs or "") == old["nargs"].strip("'"), old["flag"]
        if old["flag"] != "--wandb_run_name":  # its default is the launch time
            # argparse's own default when none is given: False for a switch, None for a value.
            default = eval(old["default"], {}) if old["default"] else (False if old["action"] == "store_true" else None)
            assert as_list(new.default) == as_list(default), old["flag"]
        if old["choices"]:
            assert set(ast.literal_eval(old["choices"])) <= set(new.choices), old["flag"]
        compared += 1
    assert compared > 120


def test_legacy_spellings_map_to_new_names(capsys):
    """A published script's command line, all legacy spellings, through the module's main."""
    main([
        "--pretrain", "/models/m", "--prompt_data", "/data/p.jsonl", "--remote_rm_url", "/rm/reward.py",
        "--advantage_estimator", "group_norm", "--n_samples_per_prompt", "8", "--init_kl_coef", "0.001",
        "--use_kl_loss", "--kl_estimator", "k3", "--eps_clip", "0.1", "--eps_clip_low_high", "0.2", "0.28",
        "--temperature", "0.6", "--micro_train_batch_size", "2", "--train_batch_size", "64",
        "--rollout_batch_size", "32", "--micro_rollout_batch_size", "4", "--prompt_max_len", "1024",
        "--generate_max_len", "3000", "--input_key", "problem", "--label_key", "answer", "--max_epochs", "2",
        "--num_episodes", "3", "--dynamic_filtering", "--actor_learning_rate", "5e-7",
        "--actor_num_gpus_per_node", "4", "--vllm_num_engines", "2", "--save_path", "/out", "--bf16",
        "--print_config",
    ])
    config = json.loads(capsys.readouterr().out)
    assert config["actor"]["model_name_or_path"] == "/models/m"
    assert config["data"]["prompt_dataset"] == "/data/p.jsonl"
    assert config["reward"]["remote_url"] == ["/rm/reward.py"]
    assert config["algo"]["kl"] == {**config["algo"]["kl"], "init_coef": 0.001, "use_loss": True, "estimator": "k3"}
    assert config["actor"]["eps_clip"] == 0.1 and config["actor"]["eps_clip_low_high"] == [0.2, 0.28]
    assert config["rollout"]["temperature"] == 0.6
    assert (config["train"]["micro_batch_size"], config["train"]["batch_size"]) == (2, 64)
    assert (config["rollout"]["batch_size"], config["rollout"]["micro_batch_size"]) == (32, 4)
    assert config["rollout"]["max_new_tokens"] == 3000
    assert config["data"]["max_len"] == 4024  # prompt_max_len + generate_max_len
    assert (config["data"]["input_key"], config["data"]["label_key"]) == ("problem", "answer")
    assert (config["train"]["max_epochs"], config["train"]["num_episodes"]) == (2, 3)
    assert config["algo"]["dynamic_filtering_enable"] is True
    assert config["actor"]["adam"]["lr"] == 5e-7
    assert config["actor"]["num_gpus_per_node"] == 4
    assert config["vllm"]["num_engines"] == 2
    assert config["ckpt"]["output_dir"] == "/out"


def test_aliases_point_at_real_flags_and_shadow_no_stock_flag():
    stock = stock_parser()._option_string_actions
    dests = {a.dest for a in build_parser()._actions}
    assert set(LEGACY_ALIASES.values()) <= dests
    assert {dest for dests_ in LEGACY_SHARED.values() for dest in dests_} <= dests
    legacy = [*legacy_alias_table(stock_parser()), *LEGACY_SHARED, *LEGACY_CONSTANTS, *LEGACY_NO_OP_FLAGS,
              *LEGACY_REFUSED, IS_ENABLE_FLAG, IS_TYPE_FLAG]
    assert not [name for name in legacy if f"--{name}" in stock]
