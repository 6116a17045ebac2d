"""Every check of a run's input that can be made before Ray starts, each failing with one line that
names the flag (and file:line); the CLI exits 2 on them.

* numeric flags (:func:`check_numeric_ranges`, on the parsed command line, so ``--print_config``
  refuses them too): OpenRLHF validates only a few combinations, and a negative learning rate, a
  zero batch size or a ``nan`` clip range parse fine and fail (or silently train wrongly) much later.
  :data:`RANGES` gives the valid range of every numeric flag whose sign or range means something;
  any float flag must also be finite unless it is in :data:`INFINITE_ALLOWED`;
* policy-loss flags that cannot train together (:func:`loss_conflict`, once the preset is applied);
* model folders (:func:`check_models`) and prompt / eval files (:func:`check_prompt_files`), at
  launch, once the embedded placeholders are resolved: every local file is read by the project's
  loader (:func:`openrlhf_ext.data.read_rows`) and each record is turned into the prompt exactly as
  OpenRLHF's ``PromptDataset`` will (its own ``preprocess_data``); a prompt longer than the prompt
  budget, which OpenRLHF's generator would cut from the left with a log line only, is an error.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from openrlhf_ext.algorithms.config import STOCK_LOSS_AGG_MODES, STOCK_POLICY_LOSS_TYPES, is_stock_loss
from openrlhf_ext.data import DatasetFormatError, read_rows


class InputError(ValueError):
    """Input found bad before Ray starts; the message starts with the flag it is about."""


class RangeError(InputError):
    """A numeric flag out of its range."""


@dataclass(frozen=True)
class Bound:
    """``low <= x <= high`` (``<`` where open); ``sentinel`` is also accepted (e.g. -1 = never)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    sentinel: float | None = None

    def contains(self, value: float) -> bool:
        if self.sentinel is not None and value == self.sentinel:
            return True
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below  # False for nan: every comparison with nan is False

    def describe(self) -> str:
        low = None if self.low is None else f"{'>' if self.low_open else '>='} {self.low:g}"
        high = None if self.high is None else f"{'<' if self.high_open else '<='} {self.high:g}"
        text = " and ".join(part for part in (low, high) if part)
        return text if self.sentinel is None else f"{text} (or {self.sentinel:g})"


POSITIVE = Bound(low=0, low_open=True)
NON_NEGATIVE = Bound(low=0)
AT_LEAST_ONE = Bound(low=1)
FRACTION = Bound(low=0, high=1)
UNIT_OPEN = Bound(low=0, high=1, high_open=True)  # [0, 1): momenta, dropout
STEPS = Bound(low=1, sentinel=-1)  # every N steps, -1 = never

RANGES: dict[str, Bound] = {
    **{f"{role}.{key}": AT_LEAST_ONE for role in ("actor", "ref", "critic", "reward")
       for key in ("num_nodes", "num_gpus_per_node")},
    **{f"{role}.{key}": bound for role in ("actor", "critic") for key, bound in (
        ("adam.lr", POSITIVE), ("adam.betas", UNIT_OPEN), ("adam.eps", POSITIVE),
        ("adam.weight_decay", NON_NEGATIVE), ("lr_warmup_ratio", FRACTION), ("min_lr_ratio", FRACTION),
        ("max_norm", POSITIVE), ("muon.lr", POSITIVE), ("muon.momentum", UNIT_OPEN),
        ("muon.ns_steps", AT_LEAST_ONE),
    )},
    "vllm.num_engines": NON_NEGATIVE,
    "vllm.tensor_parallel_size": AT_LEAST_ONE,
    "vllm.gpu_memory_utilization": Bound(low=0, high=1, low_open=True),
    "algo.advantage.is_correction_threshold": NON_NEGATIVE,
    "train.async_queue_size": AT_LEAST_ONE,
    "eval.steps": STEPS,
    "ckpt.save_steps": STEPS,
    "logger.logging_steps": AT_LEAST_ONE,
    "ckpt.max_num": AT_LEAST_ONE,
    "ckpt.max_mem": POSITIVE,
    "ds.zero_stage": Bound(low=0, high=3),
    "train.ema_beta": FRACTION,
    "ds.zpg": AT_LEAST_ONE,
    "data.dataloader_num_workers": NON_NEGATIVE,
    "ds.tensor_parallel_size": AT_LEAST_ONE,
    "rollout.max_tokens_per_gpu": AT_LEAST_ONE,
    "train.max_tokens_per_gpu": AT_LEAST_ONE,
    "ds.lora.rank": NON_NEGATIVE,
    "ds.lora.alpha": POSITIVE,
    "ds.lora.dropout": UNIT_OPEN,
    "train.num_episodes": AT_LEAST_ONE,
    "rollout.batch_size": AT_LEAST_ONE,
    "rollout.vllm_generate_batch_size": AT_LEAST_ONE,
    "rollout.micro_batch_size": AT_LEAST_ONE,
    "train.max_epochs": AT_LEAST_ONE,
    "data.max_len": AT_LEAST_ONE,
    "rollout.max_new_tokens": AT_LEAST_ONE,
    "data.max_samples": AT_LEAST_ONE,
    "actor.eps_clip": NON_NEGATIVE,
    "actor.eps_clip_low_high": NON_NEGATIVE,
    "actor.dual_clip": Bound(low=1, low_open=True),  # OpenRLHF's dual-clip PPO needs c > 1
    "critic.value_clip": NON_NEGATIVE,
    "algo.advantage.lambd": FRACTION,
    "algo.advantage.gamma": FRACTION,
    "train.micro_batch_size": AT_LEAST_ONE,
    "train.batch_size": AT_LEAST_ONE,
    "rollout.top_p": Bound(low=0, high=1, low_open=True),
    "rollout.temperature": NON_NEGATIVE,
    "critic.freezing_steps": Bound(low=0, sentinel=-1),
    "rollout.n_samples_per_prompt": AT_LEAST_ONE,
    "algo.kl.target": POSITIVE,
    "algo.kl.horizon": AT_LEAST_ONE,
    "algo.kl.init_coef": NON_NEGATIVE,
    "actor.aux_loss_coef": NON_NEGATIVE,
    "reward.overlong_buffer_len": POSITIVE,
    "reward.overlong_penalty_factor": NON_NEGATIVE,
    "ds.ring_attn_size": AT_LEAST_ONE,
    "ds.ring_attn_head_stride": AT_LEAST_ONE,
    "eval.temperature": NON_NEGATIVE,
    "eval.n_samples_per_prompt": AT_LEAST_ONE,
    "data.max_images_per_prompt": NON_NEGATIVE,
    "ext.loss_norm_tokens": AT_LEAST_ONE,
    "ext.prompt_max_len": AT_LEAST_ONE,
    "ext.format_reward_coef": NON_NEGATIVE,
    "ext.reward_timeout": POSITIVE,
    "ext.difficulty": NON_NEGATIVE,
    "ext.num_prompts": AT_LEAST_ONE,
    "ext.max_restarts": NON_NEGATIVE,
}

# Pairs given as LOW HIGH that must be ordered.
ORDERED_PAIRS = ("reward.clip_range", "algo.dynamic_filtering_range")

# float("inf") is the stock default (no size limit on kept checkpoints).
INFINITE_ALLOWED = frozenset({"ckpt.max_mem"})


def _values(value: object) -> Iterable[object]:
    return value if isinstance(value, list | tuple) else (value,)


def check_numeric_ranges(ns: argparse.Namespace) -> None:
    """Raise :class:`RangeError` for the first numeric flag (flat ``ns``) outside its range."""
    for dest, value in sorted(vars(ns).items()):
        numbers = [v for v in _values(value) if isinstance(v, int | float) and not isinstance(v, bool)]
        for number in numbers:
            if isinstance(number, float) and not math.isfinite(number) and dest not in INFINITE_ALLOWED:
                raise RangeError(f"--{dest}: must be a finite number, got {value}")
            bound = RANGES.get(dest)
            if bound is not None and not bound.contains(number):
                shown = list(value) if isinstance(value, list | tuple) else value
                raise RangeError(f"--{dest}: must be {bound.describe()}, got {shown}")
    for dest in ORDERED_PAIRS:
        low, high = getattr(ns, dest)
        if not low < high:
            raise RangeError(f"--{dest}: LOW must be below HIGH, got {low:g} {high:g}")


def loss_conflict(values: Mapping[str, Any]) -> str | None:
    """Why the resolved (flat) policy-loss flags cannot train together, starting with the flag; None
    if they can. (The policy actor would refuse them only after its models loaded.)"""
    loss, aggregation = values["actor.policy_loss_type"], values["actor.loss_agg_mode"]
    if loss == "gspo" and not is_stock_loss(loss, aggregation):
        return f"--actor.loss_agg_mode {aggregation}: GSPO is sequence-level; use seq-mean-token-mean"
    level = values["algo.advantage.is_correction_level"]
    if level != "off" and not is_stock_loss(loss, aggregation):
        return (f"--algo.advantage.is_correction_level {level}: the vLLM importance-sampling correction runs only "
                f"with OpenRLHF's own losses (--actor.policy_loss_type {'/'.join(STOCK_POLICY_LOSS_TYPES)} with "
                f"--actor.loss_agg_mode {'/'.join(STOCK_LOSS_AGG_MODES)}); got {loss} with {aggregation}")
    return None


# ---------------------------------------------------------------------------------------------
# Model folders and prompt files (at launch, before ray.init)

# "org/name" (a Hugging Face Hub id, downloaded on first use) rather than a local path.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def check_model_path(flag: str, name: str) -> None:
    """A local model folder must hold a ``config.json``; a Hub id must be fetchable (:func:`hub_model_problem`)."""
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise InputError(f"{flag}: {name}: no config.json, not a Hugging Face model folder")
        for weights in sorted(path.glob("*.safetensors")):
            problem = safetensors_problem(weights)
            if problem:
                raise InputError(f"{flag}: {weights}: {problem}")
        return
    if _HUB_ID.match(name):
        problem = hub_model_problem(name)
        if problem:
            raise InputError(f"{flag}: {name}: not a local folder, and {problem}")
        return
    raise InputError(f"{flag}: {name}: no such model folder")


def hub_model_problem(repo_id: str) -> str | None:
    """Why the Hugging Face Hub model ``repo_id`` cannot be loaded (None if it can), found by
    fetching its ``config.json`` now, as transformers would in the first Ray actor to load it
    (from the cache when offline or unreachable; the token of ``hf auth login`` / ``HF_TOKEN``)."""
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
    )

    try:
        hf_hub_download(repo_id, "config.json")
    except LocalEntryNotFoundError:  # not cached, and the Hub not asked (offline) or not reachable
        if constants.is_offline_mode():
            return "not in the Hugging Face cache (offline: HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE is set)"
        return "not in the Hugging Face cache, with the Hugging Face Hub out of reach (no network?)"
    except GatedRepoError:
        return "a gated model on the Hugging Face Hub: accept its terms on huggingface.co, then `hf auth login`"
    except RepositoryNotFoundError:
        return "no model of that name on the Hugging Face Hub (a typo? a private one needs `hf auth login`)"
    except RemoteEntryNotFoundError:
        return "its Hugging Face Hub repository has no config.json (not a transformers model)"
    except HFValidationError as err:
        return f"not a valid Hugging Face Hub id ({err})"
    except HfHubHTTPError as err:
        return f"the Hugging Face Hub answered: {str(err).splitlines()[0]}"
    return None


def safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a whole safetensors file (None if it is), from its header alone: an
    8-byte little-endian header length, a JSON header, then the tensors' bytes it describes."""
    size = path.stat().st_size
    with path.open("rb") as f:
        length = int.from_bytes(f.read(8), "little")
        if size < 8 or 8 + length > size:
            return f"truncated safetensors file ({size} bytes, shorter than its header)"
        try:
            header = json.loads(f.read(length))
            end = max((int(entry["data_offsets"][1]) for key, entry in header.items() if key != "__metadata__"),
                      default=0)
        except (ValueError, RecursionError, KeyError, TypeError, IndexError, AttributeError):
            return "not a safetensors file (unreadable header)"
    if 8 + length + end > size:
        return f"truncated safetensors file ({size} bytes, its header describes {8 + length + end})"
    return None


def check_models(args: SimpleNamespace) -> None:
    check_model_path("--actor.model_name_or_path", args.actor.model_name_or_path)
    if args.critic.model_name_or_path:
        check_model_path("--critic.model_name_or_path", args.critic.model_name_or_path)
    if args.reward.model_name_or_path and not args.reward.remote_url:
        for name in args.reward.model_name_or_path.split(","):
            check_model_path("--reward.model_name_or_path", name.strip())


def _local_sources(value: str) -> list[str]:
    """The local files / folders of a stock ``a.jsonl,b@subdir,org/name`` dataset list (Hub names skipped)."""
    sources = []
    for part in value.split(","):
        source = part.split("@")[0].strip()
        if source and (Path(source).exists() or not _HUB_ID.match(source)):
            sources.append(source)
    return sources


def _stock_prompt(obj: Any, where: str, data: SimpleNamespace, chat_template: Any) -> str:
    """The prompt OpenRLHF's ``PromptDataset`` builds from one record (its own ``preprocess_data``)."""
    from openrlhf.datasets.prompts_dataset import preprocess_data

    if not isinstance(obj, dict):
        raise DatasetFormatError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    value = obj.get(data.input_key)
    is_chat = isinstance(value, list) and value and all(isinstance(m, dict) and "content" in m for m in value)
    if not ((isinstance(value, str) and value.strip()) or (chat_template and is_chat)):
        shown = "missing" if data.input_key not in obj else f"a {type(value).__name__}"
        raise DatasetFormatError(f"{where}: {data.input_key!r} (--data.input_key) must be a non-empty string"
                                 f"{' or a list of chat messages' if chat_template else ''}; it is {shown}")
    if data.label_key is not None and obj.get(data.label_key) is None:
        raise DatasetFormatError(f"{where}: {data.label_key!r} (--data.label_key) is missing or null")
    try:
        prompt, _ = preprocess_data(obj, data.input_template, data.input_key, data.label_key, chat_template)
    except (ValueError, TypeError, KeyError, IndexError) as exc:  # template formatting of this record
        raise DatasetFormatError(f"{where}: cannot build the prompt: {exc}") from None
    return prompt


def check_prompt_files(args: SimpleNamespace, tokenizer: Any) -> None:
    """Read every local prompt / eval file and check its prompts fit the prompt budget."""
    data = args.data
    chat_template = tokenizer.apply_chat_template if data.apply_chat_template else None
    # OpenRLHF's generator keeps max_len - max_new_tokens prompt tokens (max_len - 1 without max_new_tokens).
    new_tokens = args.rollout.max_new_tokens or 1
    budget = data.max_len - new_tokens
    for flag, value in (("--data.prompt_dataset", data.prompt_dataset), ("--eval.dataset", args.eval.dataset)):
        for source in _local_sources(value or ""):
            try:
                rows = read_rows(source)[: data.max_samples]
                prompts = [(where, _stock_prompt(obj, where, data, chat_template)) for where, obj in rows]
            except DatasetFormatError as err:
                raise InputError(f"{flag}: {err}") from None
            if not prompts:
                raise InputError(f"{flag}: {source}: no prompts")
            lengths = [len(ids) for ids in tokenizer([p for _, p in prompts], add_special_tokens=False)["input_ids"]]
            over = [(where, n) for (where, _), n in zip(prompts, lengths, strict=True) if n > budget]
            if over:
                where, n = over[0]
                raise InputError(
                    f"--data.max_len: {where}: prompt of {n} tokens, over the prompt budget of {budget} "
                    f"(--data.max_len {data.max_len} - --rollout.max_new_tokens {new_tokens}); {len(over)} of "
                    f"{len(prompts)} prompts in {flag} are over it and would be cut; raise --data.max_len or shorten them"
                )
