"""What OpenRLHF's own validation (the ``__main__`` block of ``openrlhf/cli/train_ppo_ray.py``, run
after our resolution) would meet with a traceback rather than its ``AssertionError``, which the CLI
turns into one line: refused here first, one line naming the flag.

Its block compares, splits and imports; for a user's flags (after our resolution and range checks)
two of those raise something else: packing compares ``--vllm.num_engines`` (default None) with 0,
a ``TypeError``; ``--use_ms`` imports modelscope, which OpenRLHF does not depend on.
"""

from __future__ import annotations

import argparse
import importlib.util
from typing import Any

from openrlhf_ext.cli.errors import ConfigError


def _packing_flag(values: dict[str, Any]) -> str | None:
    """The flag that turns packing on (stock validation turns it on for ring attention and dynamic
    batch), None without packing."""
    if values["ds.packing_samples"]:
        return "ds.packing_samples"
    if values["ds.ring_attn_size"] > 1:
        return "ds.ring_attn_size"
    if values["train.dynamic_batch_enable"]:
        return "train.dynamic_batch_enable"
    return None


def refuse_what_stock_validation_crashes_on(ns: argparse.Namespace) -> None:
    """Raise :class:`ConfigError` for the flags OpenRLHF's validation would fail on with a traceback."""
    values = vars(ns)
    packing = _packing_flag(values)
    if packing and not values["vllm.num_engines"]:  # stock: `assert args.vllm.num_engines > 0`, None included
        packs = "" if packing == "ds.packing_samples" else "packs samples and "
        raise ConfigError(f"--{packing}: {packs}needs vLLM engines (--vllm.num_engines N); OpenRLHF packs only "
                          "with vLLM generation")
    if values["use_ms"] and importlib.util.find_spec("modelscope") is None:
        raise ConfigError("--use_ms: needs the modelscope package (pip install modelscope), through which OpenRLHF "
                          "downloads models from ModelScope")
