"""Reference labels: normalisation of math answers and the encoding of reasoning-gym puzzle labels.

OpenRLHF hands a reward function one string label per prompt. Math labels are the reference answer
itself. A reasoning-gym puzzle (e.g. knights_knaves, the puzzle family of the REINFORCE++ paper, seed
001) is graded by the task's own scorer, which needs the whole generated entry; such labels are
``"rg:" + json`` so that both kinds can share one prompt file and one reward function.
"""

from __future__ import annotations

import ast
import json
from typing import Any

from openrlhf_ext.rewards.extract import strip_thousands

PUZZLE_LABEL_PREFIX = "rg:"


def normalize_label(label: object) -> str:
    """Reference answer as a string: numbers as text, thousands separators dropped, ``$...$`` removed.

    OlympiadBench-style labels written as a Python list literal (``"['$2n$']"``) are unpacked; several
    elements are joined with ``", "``.
    """
    text = str(label).strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            items = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            items = None
        if isinstance(items, list) and items and all(isinstance(x, (str, int, float)) for x in items):
            text = ", ".join(str(x).strip() for x in items)
    if len(text) >= 2 and text.startswith("$") and text.endswith("$"):
        text = text.strip("$").strip()
    return strip_thousands(text)


def encode_puzzle_label(entry: dict[str, Any]) -> str:
    """Label for a reasoning-gym entry (``question``, ``answer``, ``metadata.source_dataset``)."""
    if "source_dataset" not in entry.get("metadata", {}):
        raise ValueError("a reasoning-gym entry needs metadata.source_dataset to be scored")
    return PUZZLE_LABEL_PREFIX + json.dumps(entry, sort_keys=True)


def decode_puzzle_label(label: str) -> dict[str, Any] | None:
    """The reasoning-gym entry of a puzzle label, or ``None`` for an ordinary math label."""
    if not label.startswith(PUZZLE_LABEL_PREFIX):
        return None
    return json.loads(label[len(PUZZLE_LABEL_PREFIX) :])
