"""Final-answer extraction from a model response (docs/rewards.md), in linear time on any input.

Rules, in priority order (the first that yields a non-empty answer wins):

1. ``answer_tag``: the last ``<answer>...</answer>`` block (the R1 template of arXiv:2503.20783 §2.1). If the
   block holds a ``\\boxed{}``, the content of its last box is the answer, otherwise the whole block.
2. ``boxed``: the content of the last balanced, non-empty ``\\boxed{...}`` / ``\\fbox{...}`` (nested
   braces and escaped ``\\{`` / ``\\}`` handled; an unclosed box, e.g. of a truncated response, is skipped).
3. ``gsm8k``: the number after the last ``#### `` marker (GSM8K reference style).
4. ``fallback`` (documented, can be switched off): the last number in the response. A response that
   only reaches this rule is counted as a format error even when the number is right.

:func:`strict_extraction` is Dr. GRPO's stricter rule instead (one answer form per template).

Nothing here calls sympy: these functions are plain scans over the string, so they stay linear even
on 1 MB of text or 10k nested braces. Every function is pure.
"""

from __future__ import annotations

import re
from collections import deque
from dataclasses import dataclass

from openrlhf_ext.data.templates import TEMPLATE_NAMES, TEMPLATES

_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")
_GSM8K_RE = re.compile(r"####\s*(-?\$?\s*[0-9][0-9,]*(?:\.[0-9]+)?)")
_NUMBER_RE = re.compile(r"-?[0-9][0-9,]*(?:\.[0-9]+)?(?:\s*/\s*[0-9]+)?")
_THOUSANDS_RE = re.compile(r"-?[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?")
# Trailing end-of-sequence markers a decoded query carries (ChatML, Llama-3, SentencePiece, GPT-2).
_TRAILING_SPECIAL_RE = re.compile(r"(?:\s|<\|[a-z_]+\|>|</s>|<eos>)+\Z")
EXPLICIT_FORMS = ("answer_tag", "boxed", "gsm8k")
"""The rules above whose answer a response gives on purpose: a template's answer forms
(:attr:`openrlhf_ext.data.templates.Template.answer_forms`) are some of these, all of them by default."""


@dataclass(frozen=True)
class Extraction:
    """The extracted final answer (``None`` when no rule matched) and the rule that produced it."""

    answer: str | None
    method: str


def matching_braces(text: str) -> dict[int, int]:
    """Map the index of every ``{`` that is closed to the index of its ``}``; escaped braces are literal."""
    pairs: dict[int, int] = {}
    stack: list[int] = []
    escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "{":
            stack.append(i)
        elif ch == "}" and stack:
            pairs[stack.pop()] = i
    return pairs


def last_boxed(text: str) -> str | None:
    """Content of the last balanced non-empty ``\\boxed{...}`` (or ``\\fbox{...}``) in ``text``."""
    starts = [m.end() - 1 for m in _BOX_RE.finditer(text)]
    if not starts:
        return None
    pairs = matching_braces(text)
    for open_idx in reversed(starts):
        close_idx = pairs.get(open_idx)
        if close_idx is not None:
            content = text[open_idx + 1 : close_idx].strip()
            if content:
                return content
    return None


def last_answer_tag(text: str) -> str | None:
    """Content of the last closed ``<answer>...</answer>`` block, or ``None``."""
    end = text.rfind("</answer>")
    if end < 0:
        return None
    start = text.rfind("<answer>", 0, end)
    if start < 0:
        return None
    return text[start + len("<answer>") : end].strip()


def strip_thousands(number: str) -> str:
    """``"1,000"`` -> ``"1000"``; anything that is not a comma-grouped number is returned unchanged."""
    s = number.strip()
    return s.replace(",", "") if _THOUSANDS_RE.fullmatch(s) else s


def _last_match(pattern: re.Pattern[str], text: str) -> re.Match[str] | None:
    last = deque(pattern.finditer(text), maxlen=1)
    return last[0] if last else None


def last_gsm8k(text: str) -> str | None:
    """The number after the last ``####`` marker (``$`` and thousands separators dropped)."""
    m = _last_match(_GSM8K_RE, text)
    return None if m is None else strip_thousands(m.group(1).replace("$", "").replace(" ", ""))


def last_number(text: str) -> str | None:
    """The last integer, decimal or ``a/b`` fraction in ``text`` (the documented fallback)."""
    m = _last_match(_NUMBER_RE, text)
    return None if m is None else strip_thousands(m.group(0).rstrip(",").replace(" ", ""))


def extract_answer(response: str, fallback: bool = True) -> Extraction:
    """Apply the rules of the module docstring to ``response``."""
    tagged = last_answer_tag(response)
    if tagged:
        boxed_inside = last_boxed(tagged)
        return Extraction(boxed_inside if boxed_inside else tagged, "answer_tag")
    boxed = last_boxed(response)
    if boxed:
        return Extraction(boxed, "boxed")
    gsm = last_gsm8k(response)
    if gsm:
        return Extraction(gsm, "gsm8k")
    if fallback:
        num = last_number(response)
        if num:
            return Extraction(num, "fallback")
    return Extraction(None, "none")


def _tagged(template: str | None) -> bool:
    found = TEMPLATES.get(template) if template is not None else None
    return found is not None and found.tagged


def strict_extraction(response: str, template: str | None) -> Extraction:
    """Dr. GRPO's reward extraction (sail-sg/understand-r1-zero ``math_grader.py``): under a tagged
    template (``r1``) the response must contain ``</think> <answer>`` and ``</answer>`` (answer: the text
    after the last ``<answer>``, or the box inside it); under any other template only a ``\\boxed{}`` counts."""
    if not _tagged(template):
        boxed = last_boxed(response)
        return Extraction(boxed, "boxed") if boxed else Extraction(None, "none")
    if "</think> <answer>" not in response or "</answer>" not in response:
        return Extraction(None, "none")
    tagged = response.split("<answer>")[-1].replace("</answer>", "").strip()
    if "\\boxed" in tagged:
        tagged = last_boxed(tagged)
    return Extraction(tagged, "answer_tag") if tagged else Extraction(None, "none")


def is_well_formatted(response: str, extraction: Extraction, template: str | None) -> bool:
    """Format check of the response for ``template``.

    The answer must come from one of the template's answer forms (any of :data:`EXPLICIT_FORMS`
    without a template). Under a tagged template (``r1``) the response (which continues the prompt's
    opening ``<think>``) must also close the think block, then give one ``<answer>...</answer>``
    block, with only whitespace or end-of-sequence tokens after it.
    """
    if template is not None and template not in TEMPLATES:
        raise ValueError(f"unknown template {template!r}; expected one of {', '.join(TEMPLATE_NAMES)}")
    forms = None if template is None else TEMPLATES[template].answer_forms
    if extraction.method not in (forms or EXPLICIT_FORMS):
        return False
    if not _tagged(template):
        return True
    think_end = response.find("</think>")
    answer_start = response.rfind("<answer>")
    answer_end = response.rfind("</answer>")
    if think_end < 0 or not think_end < answer_start < answer_end:
        return False
    tail = response[answer_end + len("</answer>") :]
    return _TRAILING_SPECIAL_RE.fullmatch(tail) is not None or tail == ""


def response_from_query(query: str, prompt: str) -> str:
    """The response part of an OpenRLHF reward query (the decoded prompt + response tokens).

    OpenRLHF decodes prompt and response together, so the query may carry extra special tokens (a BOS)
    before the prompt or differ from it in whitespace. The prompt is cut at its last exact occurrence;
    failing that, at the last occurrence of its final 64 characters. If neither is found the whole query
    is returned, which can only add prompt text before the response: the extraction rules all take the
    *last* match, so a response that has an answer still wins.
    """
    if not prompt:
        return query
    idx = query.rfind(prompt)
    if idx >= 0:
        return query[idx + len(prompt) :]
    tail = prompt[-64:]
    idx = query.rfind(tail)
    if idx >= 0:
        return query[idx + len(tail) :]
    return query
