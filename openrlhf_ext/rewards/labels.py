"""Reference labels: normalisation of math answers.

OpenRLHF hands a reward function one string label per prompt. Math labels are the reference answer
itself; reasoning-gym puzzle labels (``"rg:" + json``) are encoded and decoded by
:mod:`openrlhf_ext.data.puzzles`, which makes them.
"""

from __future__ import annotations

import ast

from openrlhf_ext.rewards.extract import strip_thousands


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
