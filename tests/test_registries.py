"""Every choice list has one source, the registries: the commands' choices, the reward's format check
and the maths read them, so adding a template, a switch value or a preset touches one place."""

from __future__ import annotations

import argparse

import pytest
import torch

from openrlhf_ext.algorithms import compute_advantage_result
from openrlhf_ext.algorithms.config import (
    BASELINES,
    DROPPED_ROWS,
    ESTIMATOR_ALIASES,
    FILTERS,
    LOSS_AGG_MODES,
    POLICY_LOSS_TYPES,
    PRESETS,
    STATS,
    STD_SCALES,
    AdvantageConfig,
)
from openrlhf_ext.cli import evaluate
from openrlhf_ext.cli.train_config import build_parser, resolve_train_config
from openrlhf_ext.data.templates import TEMPLATE_NAMES, TEMPLATES, apply_template
from openrlhf_ext.rewards.config import RewardConfig
from openrlhf_ext.rewards.extract import EXPLICIT_FORMS, extract_answer, is_well_formatted, strict_extraction

# One response per answer form, each well formatted under a template asking for that form.
RESPONSE_IN_FORM = {
    "answer_tag": "so</think> <answer>5</answer>",
    "boxed": r"so \boxed{5}",
    "gsm8k": "so\n#### 5",
}


@pytest.fixture(scope="module")
def train_parser() -> argparse.ArgumentParser:
    return build_parser()


def choices(parser: argparse.ArgumentParser, dest: str) -> tuple:
    return tuple(next(a for a in parser._actions if a.dest == dest).choices)


def test_every_command_offers_the_registered_templates(train_parser):
    assert TEMPLATE_NAMES == tuple(TEMPLATES) == tuple(t.name for t in TEMPLATES.values())
    assert choices(train_parser, "ext.template") == TEMPLATE_NAMES
    assert choices(evaluate.build_parser(), "template") == TEMPLATE_NAMES


@pytest.mark.parametrize("name", TEMPLATE_NAMES)
def test_the_reward_checks_each_template_by_its_registered_answer_forms(name):
    template = TEMPLATES[name]
    assert RewardConfig(template=name).template == name
    forms = template.answer_forms or EXPLICIT_FORMS
    assert set(forms) <= set(EXPLICIT_FORMS)
    for form, response in RESPONSE_IN_FORM.items():
        extraction = extract_answer(response)
        assert extraction.method == form and extraction.answer == "5"
        assert is_well_formatted(response, extraction, name) is (form in forms), form
    # Dr. GRPO's strict reward: the tagged template scores only its tags, every other only a box.
    strict_form = "answer_tag" if template.tagged else "boxed"
    for form, response in RESPONSE_IN_FORM.items():
        assert strict_extraction(response, name).answer == ("5" if form == strict_form else None), form
    if template.text is not None:
        assert "What is 2+3?" in apply_template("What is 2+3?", name)


def test_an_unregistered_template_is_refused_everywhere(train_parser):
    with pytest.raises(ValueError, match="unknown template"):
        apply_template("q", "llama")
    with pytest.raises(ValueError, match="unknown template"):
        is_well_formatted("x", extract_answer("x"), "llama")
    with pytest.raises(ValueError, match="template must be one of"):
        RewardConfig(template="llama")
    assert "llama" not in choices(train_parser, "ext.template")


@pytest.mark.parametrize(
    ("dest", "registry"),
    [("ext.filter", FILTERS), ("ext.baseline", BASELINES), ("ext.std_scale", STD_SCALES), ("ext.stats", STATS),
     ("ext.dropped_rows", DROPPED_ROWS)],
)
def test_switch_flags_offer_exactly_the_registered_values(train_parser, dest, registry):
    assert choices(train_parser, dest) == registry


def test_extended_stock_choices_come_from_the_registries(train_parser):
    assert set(choices(train_parser, "algo.advantage.estimator")) >= {*PRESETS, *ESTIMATOR_ALIASES}
    assert set(choices(train_parser, "actor.policy_loss_type")) >= set(POLICY_LOSS_TYPES)
    assert set(choices(train_parser, "actor.loss_agg_mode")) >= set(LOSS_AGG_MODES)


@pytest.mark.parametrize(
    ("switch", "value"),
    [("filter", v) for v in FILTERS] + [("baseline", v) for v in BASELINES]
    + [("std_scale", v) for v in STD_SCALES] + [("stats", v) for v in STATS],
)
def test_each_registered_switch_value_reaches_the_workers_and_the_maths(switch, value):
    # A value added to a registry is a flag value, lands in the typed config the workers read, and the
    # grid computes with it.
    args = resolve_train_config(["--pretrain", "/m", "--prompt_data", "/d.jsonl", "--remote_rm_url", "/r.py",
                                 "--advantage_estimator", "rloo", "--n_samples_per_prompt", "2",
                                 f"--ext.{switch}", value])
    assert getattr(args.ext_config.advantage, switch) == value
    config = AdvantageConfig(**{switch: value})
    rewards = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    result = compute_advantage_result(rewards, config, lengths=torch.tensor([[3, 5], [2, 4]]))
    assert torch.isfinite(result.advantages).all()
