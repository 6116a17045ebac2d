"""Agreement on benchmark-style answers (docs/rewards.md): a response built from the reference answer scores 1
in every answer form, a response with a perturbed answer scores 0. Runs through the worker pool,
as training does."""

from __future__ import annotations

import pytest
from helpers import read_problems
from support.reward_corpus import perturb_answer, reference_response

from openrlhf_ext.rewards import RewardConfig, ScoringPool, score_responses

# Generous: the limit is not what this test is about, and a loaded CI machine must not time out.
CONFIG = RewardConfig(timeout_s=20.0, workers=2)


def test_perturb_changes_the_value():
    assert perturb_answer("52_8") == "62_8"
    assert perturb_answer("\\frac{9}{2}") == "\\frac{8}{2}"
    assert perturb_answer("p - q") == "p - q+1"


@pytest.fixture(scope="module")
def pool():
    with ScoringPool(workers=CONFIG.workers) as p:
        yield p


@pytest.mark.parametrize(
    "name, forms",
    [
        ("math_style", ("boxed", "answer_tag")),
        ("gsm8k_style", ("boxed", "answer_tag", "gsm8k")),
    ],
)
def test_reference_answers_score_one_and_perturbed_zero(pool, name, forms):
    rows = read_problems(name)
    responses, labels, expected, what = [], [], [], []
    for row in rows:
        answer = row["answer"]
        for form in forms:
            responses += [reference_response(answer, form), reference_response(perturb_answer(answer), form)]
            labels += [answer, answer]
            expected += [1.0, 0.0]
            what += [(form, answer, "reference"), (form, answer, "perturbed")]
    batch = score_responses(responses, labels, CONFIG, pool=pool)
    wrong = [(w, r.answer, r.error) for w, r, e in zip(what, batch.results, expected, strict=True) if r.reward != e]
    assert not wrong, f"{len(wrong)} disagreements, e.g. {wrong[:5]}"
    assert sum(r.timed_out for r in batch.results) == 0
    assert len(batch.results) == 2 * len(forms) * len(rows)
