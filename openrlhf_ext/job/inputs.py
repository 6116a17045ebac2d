"""Resolve what a run reads before Ray starts: the model folder, the prompt files, the reward settings.

The CLI leaves placeholders (``embedded:...``) so that parsing and ``--print_config`` stay instant;
here they become real paths, in the driver, once:

* ``embedded:SmolLM2-135M-Instruct`` -> the converted, cached model folder;
* ``embedded:arithmetic`` -> generated problems (``--ext.difficulty``, ``--ext.num_prompts``,
  seeded by ``--train.seed``) written as a prompt file;
* with ``--ext.template``, a user's prompt / eval files are re-written with the template applied
  (problem and answer keys from ``--data.input_key`` / ``--data.label_key``);
* benchmark names (``--prompt_data gsm8k_train``, ``--eval_dataset math500,aime24``: docs/evaluation.md)
  are loaded and written the same way, with ``--ext.template chat`` unless another is given;
* the math reward reads its settings from ``OPENRLHF_EXT_REWARD_*`` variables (it is loaded by
  path inside Ray actors), derived from the ``--ext.*`` reward flags.
"""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from openrlhf_ext.data import INPUT_KEY, LABEL_KEY, DatasetFormatError, benchmark_names, build_prompt_file
from openrlhf_ext.job.checks import InputError, check_models, check_prompt_files
from openrlhf_ext.rewards import RewardConfig
from openrlhf_ext.trainer.checkpoints import resolve_resume

# Placeholders the CLI leaves (model conversion, data generation), so that --print_config and
# validation stay instant and never touch the network or the disk.
EMBEDDED_MODEL = "embedded:SmolLM2-135M-Instruct"
EMBEDDED_PROMPTS = "embedded:arithmetic"


logger = logging.getLogger(__name__)


def resolve_model(args: SimpleNamespace) -> None:
    if args.actor.model_name_or_path != EMBEDDED_MODEL:
        return
    from openrlhf_ext.models.embedded import ensure_embedded_model

    path = ensure_embedded_model()
    args.actor.model_name_or_path = path
    if args.critic.model_name_or_path == EMBEDDED_MODEL:
        args.critic.model_name_or_path = path


def _templated_file(flag: str, source: str, out: Path, args: SimpleNamespace, tokenizer: Any, problem_key: str,
                    answer_key: str, limit: int | None = None) -> str:
    try:
        path = build_prompt_file(source, out, args.ext.template, tokenizer, problem_key=problem_key,
                                 answer_key=answer_key, limit=limit, seed=args.train.seed)
    except DatasetFormatError as err:
        raise InputError(f"{flag}: {err}") from None
    logger.info(f"prompts ({args.ext.template} template) from {source}: {path}")
    return str(path)


def _problem_answer_keys(data: SimpleNamespace) -> tuple[str, str]:
    """The user's keys; OpenRLHF's defaults (``input`` / none) mean our files' ``problem`` / ``answer``."""
    if data.input_key == "input" and data.label_key is None:
        return "problem", "answer"
    return data.input_key, data.label_key or "answer"


def resolve_prompts(args: SimpleNamespace, tokenizer: Any) -> None:
    # Absolute: the controller actor reads the files, on another node or under another working dir
    # (a shared filesystem mounted at the same path), not this process's.
    run_dir = Path(args.ckpt.output_dir).absolute()
    data = args.data
    problem_key, answer_key = _problem_answer_keys(data)
    flag = "--data.prompt_dataset"
    named = benchmark_names(data.prompt_dataset) + benchmark_names(args.eval.dataset or "")
    if named and not args.ext.template:
        # OpenRLHF cannot read a benchmark name: it is built here, templated as the embedded prompts are.
        args.ext.template = "chat"
        logger.info(f"{', '.join(named)}: benchmark name(s), prompts built with --ext.template chat")
    if data.prompt_dataset == EMBEDDED_PROMPTS:
        source = f"synthetic:{args.ext.difficulty}:{args.ext.num_prompts}"
        data.prompt_dataset = _templated_file(flag, source, run_dir / "prompts.jsonl", args, tokenizer,
                                              "problem", "answer")
    elif args.ext.template:
        data.prompt_dataset = _templated_file(flag, data.prompt_dataset, run_dir / "prompts.jsonl", args, tokenizer,
                                              problem_key, answer_key, limit=data.max_samples)
    else:
        return
    if args.eval.dataset:
        args.eval.dataset = _templated_file("--eval.dataset", args.eval.dataset, run_dir / "eval_prompts.jsonl",
                                            args, tokenizer, problem_key, answer_key)
    # The files now hold finished prompts under our keys: no second template from OpenRLHF.
    data.input_key, data.label_key = INPUT_KEY, LABEL_KEY
    data.apply_chat_template, data.input_template = False, None


def reward_env(args: SimpleNamespace) -> dict[str, str]:
    # The CLI already warned if {0,1} rewards change what the advantage mode does.
    config = RewardConfig(signed=args.ext.signed_reward, format_coef=args.ext.format_reward_coef,
                          timeout_s=args.ext.reward_timeout, template=args.ext.template,
                          fallback=args.ext.reward_fallback, strict=args.ext.strict_format)
    return config.to_env()


def prepare_inputs(args: SimpleNamespace) -> dict[str, str]:
    """Resolve model and prompts in place and check them (:class:`InputError` if bad); return the
    environment the Ray workers need."""
    from transformers import AutoTokenizer

    resolve_model(args)
    check_models(args)
    tokenizer = AutoTokenizer.from_pretrained(args.actor.model_name_or_path, trust_remote_code=True,
                                              use_fast=not args.data.disable_fast_tokenizer)
    Path(args.ckpt.output_dir).mkdir(parents=True, exist_ok=True)
    resolve_prompts(args, tokenizer)
    check_prompt_files(args, tokenizer)
    resolve_resume(args)
    return reward_env(args)
