"""Synthetic model outputs for checking the reward: responses built from a reference answer, perturbed
answers, and adversarial outputs. Shared by the tests and ``benchmarks/bench_reward.py``."""

from __future__ import annotations

import re

ANSWER_FORMS = ("boxed", "answer_tag", "gsm8k")

# Outputs that keep math-verify busy for more than 10 s when nothing limits it (measured on the
# shared 2-core machine): they must be killed at the limit.
HANGING_OUTPUTS: dict[str, str] = {
    "power_tower": r"Clearly the answer is $\boxed{10^{10^{10^{10}}}}$.",
    "huge_factorial": r"\boxed{(10^{10})!}",
    "long_simplification": r"\boxed{\sin(x)^{200}+\cos(x)^{200}-\frac{(x+1)^{50}}{(x-1)^{50}}}",
}
# Outputs that must be judged quickly, by the guards or by math-verify itself. Values are str, or
# bytes for output that is not valid UTF-8.
QUICK_BAD_OUTPUTS: dict[str, str | bytes] = {
    "nested_braces_10k": "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}",
    "one_megabyte": "lorem ipsum " * 87_382,
    "invalid_utf8": b"\xff\xfe\\boxed{\xc3\x28}\xa0\xa1",
    "empty": "",
    "unbalanced_left": r"\boxed{\left( 1, 2}",
    "factorial_20000": r"\boxed{20000!}",  # 77k digits, computed exactly in ~10 ms
    "many_unclosed_boxes": "\\boxed{" * 50_000,
    "nul_bytes": "\x00" * 1000 + "\\boxed{\x00}",
    "lone_surrogate": "\ud800 \\boxed{\udfff}",
    "answer_tag_megabyte": "<answer>" + "9" * 1_000_000 + "</answer>",
}


def reference_response(answer: str, form: str) -> str:
    """A response with surrounding prose that states ``answer`` in ``form`` (one of ``ANSWER_FORMS``)."""
    if form == "boxed":
        return (
            f"Let me work this out step by step.\nAfter simplifying we get it.\nSo the answer is $\\boxed{{{answer}}}$."
        )
    if form == "answer_tag":
        return f"We compute carefully and check the work.</think> <answer>{answer}</answer>"
    if form == "gsm8k":
        return f"Adding everything up gives the total.\n#### {answer}"
    raise ValueError(f"unknown answer form {form!r}; expected one of {ANSWER_FORMS}")


def perturb_answer(answer: str) -> str:
    """A different answer: the first digit changed (the main value, not a base subscript or a unit
    exponent, which math-verify rightly ignores), or ``+1`` appended when there is no digit."""
    match = re.search(r"\d", answer)
    if match is None:
        return answer + "+1"
    digit = int(match.group())
    new = str(digit + 1) if digit < 9 else "8"
    return answer[: match.start()] + new + answer[match.end() :]
