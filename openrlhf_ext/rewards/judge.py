"""In-process judgement of one response against its label: extraction, guards, math-verify (docs/rewards.md).

This is what a scoring worker process runs. It has no time limit of its own: math-verify's timeouts
rely on SIGALRM and are disabled here (see :mod:`openrlhf_ext.rewards.pool` for why); without them
``\\boxed{10^{10^{10^{10}}}}`` keeps math-verify busy for more than 10 s. The hard limit is enforced
from outside by the pool, which kills the worker. Call :func:`judge` directly only on trusted inputs.

Decision order for a math label:

1. extract the final answer (:func:`openrlhf_ext.rewards.extract.extract_answer`);
2. reject answers longer than ``MAX_ANSWER_CHARS`` or nested deeper than ``MAX_BRACE_DEPTH`` as wrong
   (no reference answer in the shared benchmarks is longer than 230 characters);
3. equal after removing whitespace, ``$`` and spacing macros: correct, without sympy;
4. otherwise math-verify: ``verify(parse(label), parse(answer))``.
"""

from __future__ import annotations

import functools
import logging
import re

from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

from openrlhf_ext.data.puzzles import decode_puzzle_label
from openrlhf_ext.rewards.extract import extract_answer, is_well_formatted, strict_extraction, strip_thousands
from openrlhf_ext.rewards.labels import normalize_label
from openrlhf_ext.rewards.verdict import Verdict

MAX_ANSWER_CHARS = 1000
MAX_BRACE_DEPTH = 32
# Correct iff a reasoning-gym scorer gives full marks (they return partial credit in [0, 1]).
PUZZLE_FULL_MARKS = 1.0 - 1e-9

_EXTRACTION_CONFIG = (LatexExtractionConfig(), ExprExtractionConfig())
_CANON_DROP_RE = re.compile(r"\s+|\$|\\[,;:! ]|\\left|\\right|\\displaystyle|\.$")

# With their timeouts disabled, math-verify and latex2sympy warn once per process; a worker says so
# in its module docstring instead.
logging.getLogger("math_verify").setLevel(logging.ERROR)


def brace_depth(text: str) -> int:
    """Maximum nesting depth of ``{``/``}`` in ``text``."""
    depth = best = 0
    for ch in text:
        if ch == "{":
            depth += 1
            best = max(best, depth)
        elif ch == "}":
            depth = max(depth - 1, 0)
    return best


def canonical(answer: str) -> str:
    """Answer text with whitespace, ``$``, spacing macros, ``\\left``/``\\right`` and a final period removed."""
    return _CANON_DROP_RE.sub("", answer)


@functools.lru_cache(maxsize=4096)
def _parse_latex(text: str) -> tuple:
    # Labels repeat n_samples_per_prompt times in a batch: cache their parse. The answer is wrapped in
    # \boxed{} so math-verify's highest-priority LaTeX rule takes it whole.
    return tuple(parse("\\boxed{" + text + "}", _EXTRACTION_CONFIG, parsing_timeout=None))


def math_equal(answer: str, label: str) -> bool:
    """``answer`` and ``label`` denote the same mathematical object (rules 3 and 4 of the module docstring)."""
    answer, gold = strip_thousands(answer), normalize_label(label)
    if not gold:
        return False
    if canonical(answer) == canonical(gold):
        return True
    gold_parsed = list(_parse_latex(gold))
    pred_parsed = list(_parse_latex(answer))
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def _judge_puzzle(entry: dict, answer: str | None) -> bool:
    if not answer:
        return False
    from reasoning_gym import get_score_answer_fn  # optional dependency, imported on first puzzle label

    score = get_score_answer_fn(entry["metadata"]["source_dataset"])(answer, entry)
    return float(score) >= PUZZLE_FULL_MARKS


def judge(
    response: str, label: str, template: str | None = None, fallback: bool = True, strict: bool = False
) -> Verdict:
    """Judge ``response`` against ``label`` (a math answer or a reasoning-gym puzzle label); ``strict``
    extracts by Dr. GRPO's per-template rule (:func:`~.extract.strict_extraction`)."""
    puzzle = decode_puzzle_label(label)
    if strict:
        extraction = strict_extraction(response, template)
    else:
        extraction = extract_answer(response, fallback=fallback and puzzle is None)
    format_ok = is_well_formatted(response, extraction, template)
    answer = extraction.answer
    if answer is None:
        return Verdict(False, format_ok, extraction.method, None)
    if len(answer) > MAX_ANSWER_CHARS:
        return Verdict(False, format_ok, extraction.method, answer[:80], "answer_too_long")
    if brace_depth(answer) > MAX_BRACE_DEPTH:
        return Verdict(False, format_ok, extraction.method, answer[:80], "answer_too_deep")
    try:
        correct = _judge_puzzle(puzzle, answer) if puzzle is not None else math_equal(answer, label)
    except Exception as exc:  # noqa: BLE001 - sympy/latex2sympy raise anything on odd input
        return Verdict(False, format_ok, extraction.method, answer, f"exception:{type(exc).__name__}")
    return Verdict(correct, format_ok, extraction.method, answer)
