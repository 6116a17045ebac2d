"""Pure pieces of the math reward: extraction, format check, labels, config, reward values, statistics."""

from __future__ import annotations

import math

import pytest

from openrlhf_ext.data.puzzles import decode_puzzle_label, encode_puzzle_label
from openrlhf_ext.rewards import (
    Extraction,
    RewardConfig,
    extract_answer,
    percentile,
    response_from_query,
    reward_value,
    signed_reward_off_effect,
    summarize,
    summarize_logs,
)
from openrlhf_ext.rewards.extract import (
    is_well_formatted,
    last_boxed,
    last_number,
    matching_braces,
    strict_extraction,
)
from openrlhf_ext.rewards.labels import normalize_label

# ---------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    "text, answer, method",
    [
        (r"so $\boxed{\frac{1}{2}}$.", r"\frac{1}{2}", "boxed"),
        (r"first \boxed{3}, then \boxed{4}", "4", "boxed"),
        (r"\boxed{\left\{1, 2\right\}}", r"\left\{1, 2\right\}", "boxed"),  # escaped braces stay literal
        (r"\boxed{a^{b^{c}}} and an unclosed \boxed{7", "a^{b^{c}}", "boxed"),  # truncated last box skipped
        (r"\boxed{} \fbox{12}", "12", "boxed"),
        (r"\boxed {5}", "5", "boxed"),
        ("<think>x</think> <answer> 42 </answer>", "42", "answer_tag"),
        (r"<answer>The result is \boxed{9}.</answer> \boxed{8}", "9", "answer_tag"),  # tag wins over a later box
        ("Total: 3 + 4 = 7 apples.\n#### 1,250", "1250", "gsm8k"),
        ("#### $35", "35", "gsm8k"),
        ("I think it is 12, no wait, 13.", "13", "fallback"),
        ("the answer is -3/4", "-3/4", "fallback"),
        ("no digits at all", None, "none"),
        ("", None, "none"),
    ],
)
def test_extract_answer(text, answer, method):
    assert extract_answer(text) == Extraction(answer, method)


def test_fallback_can_be_switched_off():
    assert extract_answer("it is 12", fallback=False).method == "none"


def test_matching_braces_ignores_escaped_and_unmatched():
    text = r"{a\{b}}{"
    # index 0 opens, index 5 closes it; the second '}' (6) has no opener; the last '{' is never closed
    assert matching_braces(text) == {0: 5}


def test_extraction_is_linear_on_pathological_text():
    many_unclosed = "\\boxed{" * 200_000
    assert last_boxed(many_unclosed) is None
    deep = "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}"
    assert last_boxed(deep) == "{" * 10_000 + "1" + "}" * 10_000
    assert last_number("9" * 1_000_000) == "9" * 1_000_000


@pytest.mark.parametrize(
    "response, template, ok",
    [
        ("reasoning</think> <answer>5</answer>", "r1", True),
        ("reasoning</think>\n<answer>5</answer><|im_end|>", "r1", True),
        ("reasoning</think> <answer>5</answer> and more text", "r1", False),
        ("reasoning <answer>5</answer>", "r1", False),  # think block never closed
        (r"reasoning</think> \boxed{5}", "r1", False),
        (r"so \boxed{5}", "qwen_math", True),
        ("<answer>5</answer>", "qwen_math", False),
        ("#### 5", "none", True),
        ("it is 5", "none", False),  # fallback is never well formatted
        (r"\boxed{5}", None, True),
    ],
)
def test_format_check(response, template, ok):
    assert is_well_formatted(response, extract_answer(response), template) is ok


def test_format_check_rejects_unknown_template():
    with pytest.raises(ValueError, match="unknown template"):
        is_well_formatted("x", extract_answer("x"), "llama")


@pytest.mark.parametrize(
    "query, prompt, response",
    [
        ("Q: 1+1? A: 2", "Q: 1+1? A:", " 2"),
        ("<s>Q: 1+1? A: 2</s>", "Q: 1+1? A:", " 2</s>"),  # a BOS the decode added before the prompt
        ("totally different", "Q: 1+1? A:", "totally different"),
        ("abc", "", "abc"),
    ],
)
def test_response_from_query(query, prompt, response):
    assert response_from_query(query, prompt) == response


def test_prompt_boxed_placeholder_is_not_taken_as_answer():
    prompt = "<|im_start|>system\nput your final answer within \\boxed{}.<|im_end|>\n<|im_start|>assistant\n"
    response = response_from_query(prompt + "I do not know.", prompt)
    assert extract_answer(response, fallback=False).method == "none"


# ---------------------------------------------------------------- labels


@pytest.mark.parametrize(
    "label, text",
    [
        ("30,000", "30000"),
        (42, "42"),
        ("$\\frac{1}{2}$", "\\frac{1}{2}"),
        ("['$2n$']", "2n"),
        ("['11,13']", "11,13"),
        ("['1', '2']", "1, 2"),
        ("[1, 2", "[1, 2"),  # not a literal: kept as is
    ],
)
def test_normalize_label(label, text):
    assert normalize_label(label) == text


def test_puzzle_label_roundtrip():
    entry = {"question": "q", "answer": "a", "metadata": {"source_dataset": "knights_knaves"}}
    label = encode_puzzle_label(entry)
    assert label.startswith("rg:")
    assert decode_puzzle_label(label) == entry
    assert decode_puzzle_label("42") is None
    with pytest.raises(ValueError, match="source_dataset"):
        encode_puzzle_label({"question": "q", "answer": "a"})


# ---------------------------------------------------------------- config


def test_config_env_roundtrip():
    config = RewardConfig(signed=True, format_coef=0.25, timeout_s=3.5, template="r1", workers=3, fallback=False)
    env = config.to_env()
    assert env["OPENRLHF_EXT_REWARD_SIGNED"] == "1"
    assert env["OPENRLHF_EXT_REWARD_FORMAT_COEF"] == "0.25"
    assert env["OPENRLHF_EXT_REWARD_TEMPLATE"] == "r1"
    assert RewardConfig.from_env(env) == config
    assert RewardConfig.from_env({}) == RewardConfig()
    assert RewardConfig.from_env(RewardConfig().to_env()) == RewardConfig()


@pytest.mark.parametrize(
    "env, message",
    [
        ({"OPENRLHF_EXT_REWARD_SIGNED": "maybe"}, "OPENRLHF_EXT_REWARD_SIGNED"),
        ({"OPENRLHF_EXT_REWARD_FORMAT_COEF": "1.5"}, "format_coef"),
        ({"OPENRLHF_EXT_REWARD_TIMEOUT": "0"}, "timeout_s"),
        ({"OPENRLHF_EXT_REWARD_TEMPLATE": "llama"}, "template"),
        ({"OPENRLHF_EXT_REWARD_WORKERS": "two"}, "OPENRLHF_EXT_REWARD_WORKERS"),
    ],
)
def test_config_rejects_bad_env(env, message):
    with pytest.raises(ValueError, match=message):
        RewardConfig.from_env(env)


def test_signed_reward_off_effect_names_what_0_1_rewards_change():
    # Reinforce / Reinforce-Rej / rej_std: A = r (or r / std), so a 0 reward is a 0 advantage.
    assert "no gradient" in signed_reward_off_effect("none", "none", positive_only=False)
    assert "no gradient" in signed_reward_off_effect("none", "group", positive_only=False)
    assert "no gradient" in signed_reward_off_effect("none", "batch", positive_only=False)
    # r - mean of {0,1} is half that of {-1,+1} when nothing rescales it (reinforce_mean_zero, RLOO).
    assert "halved" in signed_reward_off_effect("group_mean", "none", positive_only=False)
    assert signed_reward_off_effect("none", "none", positive_only=True) is None  # RAFT: A = 1 either way
    assert signed_reward_off_effect("group_mean", "group", positive_only=False) is None  # GRPO: scale cancels
    assert signed_reward_off_effect("group_mean", "batch", positive_only=False) is None  # Lite PPO
    assert signed_reward_off_effect("none", "whiten", positive_only=False) is None  # REINFORCE++


@pytest.mark.parametrize(
    ("response", "template", "answer"),
    [
        # r1: Dr. GRPO's answer_tag_reward_fn needs "</think> <answer>" and "</answer>"
        ("I think 3+4=7 </think> <answer> 7 </answer>", "r1", "7"),
        ("reasoning </think> <answer> \\boxed{12} </answer>", "r1", "12"),
        ("reasoning</think><answer>7</answer>", "r1", None),  # no space: unformatted
        ("<answer>7</answer>", "r1", None),  # no think block closed
        ("so the answer is \\boxed{7}", "r1", None),
        # any other template: boxed_reward_fn, only a box counts
        ("so the answer is \\boxed{7}.", "qwen_math", "7"),
        ("so the answer is 7", "qwen_math", None),  # the lenient fallback would take 7
        ("#### 7", "minimalist", None),
        ("</think> <answer> 7 </answer>", "none", None),
    ],
)
def test_strict_extraction_follows_dr_grpo_per_template(response, template, answer):
    assert strict_extraction(response, template).answer == answer


def test_strict_and_fallback_change_the_verdict():
    from openrlhf_ext.rewards.judge import judge

    bare = "2 + 5 makes 7"
    assert judge(bare, "7", "qwen_math").correct  # lenient default: the last number counts
    assert not judge(bare, "7", "qwen_math", fallback=False).correct
    assert not judge(bare, "7", "qwen_math", strict=True).correct
    assert judge("so \\boxed{7}", "7", "qwen_math", strict=True).correct
    assert not judge("<answer>7</answer>", "7", "r1", strict=True).correct  # no "</think> <answer>"
    assert judge("ok </think> <answer>7</answer>", "7", "r1", strict=True).correct


def test_fallback_and_strict_reach_the_environment():
    config = RewardConfig(fallback=False, strict=True)
    env = config.to_env()
    assert env["OPENRLHF_EXT_REWARD_FALLBACK"] == "0" and env["OPENRLHF_EXT_REWARD_STRICT"] == "1"
    assert RewardConfig.from_env(env) == config


# ---------------------------------------------------------------- rewards and statistics


@pytest.mark.parametrize(
    "correct, format_ok, signed, coef, value",
    [
        (True, True, False, 0.0, 1.0),
        (False, True, False, 0.0, 0.0),
        (True, True, True, 0.0, 1.0),
        (False, True, True, 0.0, -1.0),
        (True, False, False, 0.25, 0.75),
        (False, False, False, 0.25, -0.25),
        (False, False, True, 0.25, -1.25),
        (True, False, True, 0.25, 0.75),
    ],
)
def test_reward_value(correct, format_ok, signed, coef, value):
    assert reward_value(correct, format_ok, signed, coef) == value


def test_percentile_interpolates_like_numpy():
    values = [4.0, 1.0, 3.0, 2.0]  # sorted 1, 2, 3, 4
    assert percentile(values, 50) == 2.5
    assert percentile(values, 99) == pytest.approx(3.97)  # 3 + 0.97 * (4 - 3)
    assert percentile(values, 0) == 1.0
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_summarize():
    stats = summarize(
        rewards=[1.0, 0.0, -0.25, 1.0],
        correct=[True, False, False, True],
        format_errors=[False, False, True, False],
        timed_out=[False, False, True, False],
        errors=[False, True, False, False],
        latencies_s=[0.1, 0.2, 2.0, 0.3],
    )
    assert stats.n == 4
    assert stats.reward_mean == pytest.approx(0.4375)  # 1.75 / 4
    assert stats.accuracy == 0.5
    assert stats.format_error_rate == 0.25
    assert stats.timeout_count == 1
    assert stats.error_count == 1
    assert stats.latency_p50_s == pytest.approx(0.25)  # sorted .1 .2 .3 2.0 -> (.2 + .3) / 2
    assert stats.latency_p99_s == pytest.approx(1.949)  # .3 + .97 * (2.0 - .3)
    assert stats.as_log_dict()["reward/timeout_count"] == 1.0
    with pytest.raises(ValueError):
        summarize([1.0], [True], [], [False], [False], [0.1])


def test_summarize_logs_reads_the_extra_logs_keys():
    logs = {
        "reward_correct": [1.0, 0.0],
        "reward_format_error": [0.0, 1.0],
        "reward_timed_out": [0.0, 1.0],
        "reward_error": [0.0, 0.0],
        "reward_latency_s": [0.01, 2.0],
    }
    stats = summarize_logs([1.0, -1.25], logs)
    assert (stats.reward_mean, stats.accuracy, stats.format_error_rate) == (-0.125, 0.5, 0.5)
    assert (stats.timeout_count, stats.error_count) == (1, 0)
    assert stats.latency_p50_s == pytest.approx(1.005)
