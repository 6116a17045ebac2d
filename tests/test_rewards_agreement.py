"""Agreement on the shared benchmarks (SPEC §4): a response built from the reference answer scores 1
in every answer form, a response with a perturbed answer scores 0. Runs through the worker pool,
as training does."""

from __future__ import annotations

import json
import re

import pytest

from openrlhf_ext.rewards import RewardConfig, ScoringPool, score_responses

# Generous: the limit is not what this test is about, and a loaded CI machine must not time out.
CONFIG = RewardConfig(timeout_s=20.0, workers=2)
GSM8K_ROWS = 300


def _forms(answer: str) -> dict[str, str]:
    return {
        "boxed": f"Let me work this out step by step.\nAfter simplifying we get it.\nSo the answer is $\\boxed{{{answer}}}$.",
        "answer_tag": f"We compute carefully and check the work.</think> <answer>{answer}</answer>",
        "gsm8k": f"Adding everything up gives the total.\n#### {answer}",
    }


def _perturb(answer: str) -> str:
    """Change the first digit (main value, not a base subscript or a unit exponent); else append +1."""
    match = re.search(r"\d", answer)
    if match is None:
        return answer + "+1"
    digit = int(match.group())
    new = str(digit + 1) if digit < 9 else "8"
    return answer[: match.start()] + new + answer[match.end() :]


def test_perturb_changes_the_value():
    assert _perturb("52_8") == "62_8"
    assert _perturb("\\frac{9}{2}") == "\\frac{8}{2}"
    assert _perturb("p - q") == "p - q+1"


@pytest.fixture(scope="module")
def pool():
    with ScoringPool(workers=CONFIG.workers) as p:
        yield p


def _rows(shared_math_dir, name: str, limit: int | None = None) -> list[dict]:
    lines = (shared_math_dir / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()[:limit]
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize(
    "name, forms, limit",
    [
        ("math500", ("boxed", "answer_tag"), None),
        ("amc23", ("boxed", "answer_tag"), None),
        ("gsm8k_train", ("boxed", "answer_tag", "gsm8k"), GSM8K_ROWS),
    ],
)
def test_reference_answers_score_one_and_perturbed_zero(shared_math_dir, pool, name, forms, limit):
    rows = _rows(shared_math_dir, name, limit)
    responses, labels, expected, what = [], [], [], []
    for row in rows:
        answer = row["answer"]
        for form in forms:
            responses += [_forms(answer)[form], _forms(_perturb(answer))[form]]
            labels += [answer, answer]
            expected += [1.0, 0.0]
            what += [(form, answer, "reference"), (form, answer, "perturbed")]
    batch = score_responses(responses, labels, CONFIG, pool=pool)
    wrong = [(w, r.answer, r.error) for w, r, e in zip(what, batch.results, expected, strict=True) if r.reward != e]
    assert not wrong, f"{len(wrong)} disagreements, e.g. {wrong[:5]}"
    assert sum(r.timed_out for r in batch.results) == 0
    assert len(batch.results) == 2 * len(forms) * len(rows)
