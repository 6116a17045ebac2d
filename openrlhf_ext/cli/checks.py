"""Checks of the numeric flags, run on the parsed command line before anything starts.

OpenRLHF validates only a few combinations; a negative learning rate, a zero batch size or a
``nan`` clip range parse fine and fail (or silently train wrongly) much later. :data:`RANGES` gives
the valid range of every numeric flag whose sign or range means something; any float flag must
also be finite unless it is in :data:`INFINITE_ALLOWED`.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Iterable
from dataclasses import dataclass


class RangeError(ValueError):
    """A numeric flag out of its range; the message starts with the flag."""


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
