"""Optional embedded prompt source: reasoning-gym puzzles (e.g. ``knights_knaves``, the puzzle family
of the REINFORCE++ paper, arXiv:2501.03262). Needs ``pip install openrlhf-ext[puzzles]``.

Labels are ``"rg:" + json`` of the whole entry (:func:`encode_puzzle_label`), so the math reward
grades them with the task's own scorer (full marks = correct) and puzzles can share a prompt file with
math problems. The model should put its final answer in ``<answer>`` tags or a ``\\boxed{}``; the
puzzle prompt says so.
"""

from __future__ import annotations

import json
from typing import Any

PUZZLE_LABEL_PREFIX = "rg:"
ANSWER_INSTRUCTION = "\n\nGive your final answer inside <answer> </answer> tags."


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


def generate_puzzles(task: str, n: int, seed: int = 0) -> list[dict[str, str]]:
    """``n`` reasoning-gym ``task`` problems as ``{"problem", "answer"}`` records (answer = puzzle label)."""
    try:
        import reasoning_gym
    except ImportError:
        raise ImportError(
            "reasoning_gym sources need the optional package reasoning-gym: pip install 'openrlhf-ext[puzzles]'"
        ) from None
    dataset = reasoning_gym.create_dataset(task, size=n, seed=seed)
    return [
        {"problem": entry["question"] + ANSWER_INSTRUCTION, "answer": encode_puzzle_label(dict(entry))}
        for entry in dataset
    ]


def parse_puzzle_source(source: str, seed: int, default_n: int | None) -> list[dict[str, str]]:
    """Problems for a ``reasoning_gym:TASK[:N]`` source string (N defaults to ``default_n`` or 1000)."""
    parts = source.split(":")
    if len(parts) not in (2, 3) or parts[0] != "reasoning_gym" or not parts[1]:
        raise ValueError(f"expected reasoning_gym:TASK[:N], got {source!r}")
    try:
        n = int(parts[2]) if len(parts) == 3 else (default_n or 1000)
    except ValueError:
        raise ValueError(f"expected an integer N in {source!r}") from None
    return generate_puzzles(parts[1], n, seed)
