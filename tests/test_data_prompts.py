"""Prompt templates, prompt-file loading and building, embedded problem sources (docs/rewards.md)."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest
from helpers import MATH_DATA

from openrlhf_ext.data import (
    DatasetFormatError,
    apply_template,
    build_prompt_file,
    build_prompt_records,
    generate_problems,
    load_problems,
    write_jsonl,
)
from openrlhf_ext.data.build import main as build_main

# ---------------------------------------------------------------- templates (arXiv:2503.20783 §2.1)


def test_r1_template_text():
    assert apply_template("What is 1+1?", "r1") == (
        "A conversation between User and Assistant. The User asks a question, and the Assistant solves it. "
        "The Assistant first thinks about the reasoning process in the mind and then provides the User with "
        "the answer. The reasoning process is enclosed within <think> </think> and answer is enclosed within "
        "<answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> "
        "<answer> answer here </answer>.\nUser: What is 1+1?\nAssistant: <think>"
    )


def test_qwen_math_template_text_keeps_braces_of_problem_and_box():
    assert apply_template("Solve {x}", "qwen_math") == (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
        "<|im_start|>user\nSolve {x}<|im_end|>\n<|im_start|>assistant\n"
    )


def test_none_template_is_the_raw_question():
    assert apply_template("What is {1}?", "none") == "What is {1}?"


def _chat_tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "<|user|>": 1, "<|assistant|>": 2}
    backend = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    tokenizer.chat_template = (
        "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    )
    return tokenizer


def test_chat_template_uses_the_tokenizer():
    assert apply_template("What is 2+2?", "chat", _chat_tokenizer()) == "<|user|>\nWhat is 2+2?\n<|assistant|>\n"
    with pytest.raises(ValueError, match="chat_template"):
        apply_template("q", "chat")


def test_minimalist_template_is_the_minimal_rl_prompt():
    # RLHFlow/Minimal-RL scripts/data_preprocess/numina_math.py: system prompt + question + CoT suffix.
    assert apply_template("What is 2+2?", "minimalist", _chat_tokenizer()) == (
        "<|system|>\nPlease reason step by step, and put your final answer within \\boxed{}.\n"
        "<|user|>\nWhat is 2+2? Let's think step by step and output the final answer within \\boxed{}.\n"
        "<|assistant|>\n"
    )
    with pytest.raises(ValueError, match="minimalist"):
        apply_template("q", "minimalist")


def test_unknown_template():
    with pytest.raises(ValueError, match="unknown template"):
        apply_template("q", "alpaca")


# ---------------------------------------------------------------- loading


def test_prompt_files_load_as_they_are():
    for name, count in (("math_style", 16), ("gsm8k_style", 8)):
        problems = load_problems(str(MATH_DATA / f"{name}.jsonl"))
        assert len(problems) == count
        assert all(set(p) == {"problem", "answer"} and p["problem"].strip() for p in problems)
    first = load_problems(str(MATH_DATA / "math_style.jsonl"), limit=1)[0]
    assert first["answer"] == "\\left( 2, \\frac{3\\pi}{2} \\right)"


def test_custom_keys_and_numeric_answers(tmp_path):
    path = tmp_path / "custom.jsonl"
    path.write_text('{"question": "1+1?", "solution": 2}\n\n{"question": "2+2?", "solution": "4"}\n')
    assert load_problems(str(path), problem_key="question", answer_key="solution") == [
        {"problem": "1+1?", "answer": "2"},
        {"problem": "2+2?", "answer": "4"},
    ]


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"problem": "a", "answer": "1"}\n{"problem": "b", "answer": \n', r"bad\.jsonl:2: invalid JSON"),
        ('{"problem": "a", "answer": "1"}\n{"problem": "b"}\n', r"bad\.jsonl:2: missing key\(s\) \['answer'\]"),
        ('["problem", "answer"]\n', r"bad\.jsonl:1: expected a JSON object"),
        ('{"problem": "", "answer": "1"}\n', r"bad\.jsonl:1: 'problem' must be a non-empty string"),
        ("", r"bad\.jsonl: no problems"),
    ],
)
def test_malformed_lines_are_named(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DatasetFormatError, match=message):
        load_problems(str(path))


def test_invalid_utf8_line_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(b'{"problem": "a", "answer": "1"}\n{"problem": "\xff", "answer": "1"}\n')
    with pytest.raises(DatasetFormatError, match=r"bad\.jsonl:2: not valid UTF-8"):
        load_problems(str(path))


def test_json_list_and_hf_sources(tmp_path):
    import datasets

    (tmp_path / "list.json").write_text(json.dumps([{"problem": "p", "answer": "1"}]))
    assert load_problems(str(tmp_path / "list.json")) == [{"problem": "p", "answer": "1"}]
    (tmp_path / "obj.json").write_text(json.dumps({"problem": "p"}))
    with pytest.raises(DatasetFormatError, match="JSON list"):
        load_problems(str(tmp_path / "obj.json"))

    rows = {"q": ["What is 3+4?", "What is 5+6?"], "a": ["7", "11"]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "saved"))
    datasets.Dataset.from_dict(rows).to_parquet(str(tmp_path / "rows.parquet"))
    expected = [{"problem": "What is 3+4?", "answer": "7"}, {"problem": "What is 5+6?", "answer": "11"}]
    assert load_problems(str(tmp_path / "saved"), problem_key="q", answer_key="a") == expected
    assert load_problems(str(tmp_path / "rows.parquet"), problem_key="q", answer_key="a") == expected
    # Answers in lists (OlympiadBench's several final answers): joined; an empty list is no answer.
    listed = {"q": ["Solve x^2 = 9.", "1+1?"], "a": [["-3", " 3\n"], ["2"]]}
    datasets.Dataset.from_dict(listed).to_parquet(str(tmp_path / "lists.parquet"))
    assert [p["answer"] for p in load_problems(str(tmp_path / "lists.parquet"), "q", "a")] == ["-3, 3", "2"]
    datasets.Dataset.from_dict({"q": ["1+1?"], "a": [[]]}).to_parquet(str(tmp_path / "empty.parquet"))
    with pytest.raises(DatasetFormatError, match=r"empty\.parquet\[0\]: 'a' is empty"):
        load_problems(str(tmp_path / "empty.parquet"), "q", "a")


# ---------------------------------------------------------------- synthetic problems


def _evaluate(problem: str) -> int:
    """Recompute an answer from the problem text alone (independent of the generator's code)."""
    m = re.fullmatch(r"What is (\d+) ([-+*]) (\d+)\?", problem)
    if m:
        a, op, b = int(m[1]), m[2], int(m[3])
        return {"+": a + b, "-": a - b, "*": a * b}[op]
    nums = [int(x) for x in re.findall(r"\d+", problem)]
    if "packs" in problem:  # have, packs, per pack, given away
        return nums[0] + nums[1] * nums[2] - nums[3]
    if "change" in problem:  # price, quantity, bill
        return nums[2] - nums[0] * nums[1]
    if "pages" in problem:  # per day, days, extra
        return nums[0] * nums[1] + nums[2]
    if "boxes" in problem:  # boxes, per box, lost, children
        return (nums[0] * nums[1] - nums[2]) // nums[3]
    raise AssertionError(f"unrecognised problem: {problem}")


@pytest.mark.parametrize("difficulty", [0, 1, 2, 3])
def test_synthetic_answers_are_exact(difficulty):
    problems = generate_problems(300, difficulty, seed=7)
    for p in problems:
        answer = int(p["answer"])
        assert answer == _evaluate(p["problem"]), p
        assert answer >= 0
    if difficulty == 0:
        assert all(re.fullmatch(r"What is \d \+ \d\?", p["problem"]) for p in problems)
    if difficulty == 3:
        # exact division: the remaining items split evenly among the children
        for p in problems:
            if "boxes" in p["problem"]:
                nums = [int(x) for x in re.findall(r"\d+", p["problem"])]
                assert (nums[0] * nums[1] - nums[2]) % nums[3] == 0


def test_synthetic_is_seeded_and_prefix_stable():
    assert generate_problems(50, 3, seed=1) == generate_problems(50, 3, seed=1)
    assert generate_problems(50, 3, seed=1) != generate_problems(50, 3, seed=2)
    assert generate_problems(20, 2, seed=5) == generate_problems(50, 2, seed=5)[:20]
    with pytest.raises(ValueError, match="difficulty"):
        generate_problems(5, 4)


def test_difficulty_makes_answers_larger():
    def mean_answer(d: int) -> float:
        return sum(int(p["answer"]) for p in generate_problems(400, d, seed=0)) / 400

    # level 0: a + b with a, b uniform in 0..9 has mean 9; level 2: (11..99) x (2..9) has mean 55 * 5.5
    assert mean_answer(0) == pytest.approx(9.0, abs=0.6)
    assert mean_answer(2) == pytest.approx(302.5, rel=0.1)


def test_synthetic_source_strings():
    assert load_problems("synthetic:1:7", seed=3) == generate_problems(7, 1, seed=3)
    assert len(load_problems("synthetic:0", limit=12)) == 12
    with pytest.raises(ValueError, match="synthetic:DIFFICULTY"):
        load_problems("synthetic:hard")


def test_puzzle_source_scores_with_the_reward():
    # reasoning-gym (the `puzzles` extra) is part of the test install (scripts/setup_env.sh).
    from openrlhf_ext.data.puzzles import decode_puzzle_label
    from openrlhf_ext.rewards.judge import judge

    problems = load_problems("reasoning_gym:knights_knaves:3", seed=0)
    assert len(problems) == 3
    for p in problems:
        entry = decode_puzzle_label(p["answer"])
        assert entry["metadata"]["source_dataset"] == "knights_knaves"
        assert p["problem"].startswith(entry["question"])
        assert judge(f"</think> <answer>{entry['answer']}</answer>", p["answer"], "r1").correct
        assert not judge("</think> <answer>nobody is a knight</answer>", p["answer"], "r1").correct


# ---------------------------------------------------------------- prompt files for OpenRLHF


def test_written_file_loads_in_openrlhf_prompt_dataset(tmp_path):
    from openrlhf.datasets import PromptDataset
    from openrlhf.datasets.utils import blending_datasets

    path = build_prompt_file("synthetic:2:6", tmp_path / "prompts.jsonl", "qwen_math", seed=11)
    problems = generate_problems(6, 2, seed=11)
    args = SimpleNamespace(
        data=SimpleNamespace(input_key="input", label_key="label", apply_chat_template=False, image_key="images"),
        use_ms=False,
    )
    strategy = SimpleNamespace(args=args, is_rank_0=lambda: False, print=lambda *a, **k: None)
    data = blending_datasets(str(path), None, strategy)
    dataset = PromptDataset(data, tokenizer=None, strategy=strategy)
    assert len(dataset) == 6
    datasource, prompt, label, _ = dataset[0]
    assert prompt == apply_template(problems[0]["problem"], "qwen_math")
    assert label == problems[0]["answer"]
    assert datasource == "synthetic"


def test_chat_records_and_cli(tmp_path, capsys):
    records = build_prompt_records([{"problem": "What is 2+2?", "answer": "4"}], "chat", _chat_tokenizer(), "toy")
    assert records == [
        {
            "input": "<|user|>\nWhat is 2+2?\n<|assistant|>\n",
            "label": "4",
            "problem": "What is 2+2?",
            "datasource": "toy",
        }
    ]
    out = tmp_path / "mixed.jsonl"
    # Several sources, comma-separated as OpenRLHF spells them; --limit applies to each.
    sources = f"{MATH_DATA / 'math_style.jsonl'}, {MATH_DATA / 'gsm8k_style.jsonl'}"
    build_main(["--source", sources, "--template", "r1", "--limit", "10", "--out", str(out)])
    assert "--data.label_key label" in capsys.readouterr().out
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(lines) == 18 and all(line["input"].endswith("\nAssistant: <think>") for line in lines)
    assert [line["datasource"] for line in lines] == ["math_style"] * 10 + ["gsm8k_style"] * 8
    assert lines[10]["label"] == "13" and lines[10]["problem"].startswith("A baker makes 24 muffins")
    with pytest.raises(SystemExit) as exit_info:  # a bad source: its one line, no traceback
        build_main(["--source", str(tmp_path / "nope.jsonl"), "--out", str(out)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.endswith(f": error: {tmp_path / 'nope.jsonl'}: no such file\n") and err.count("\n") == 1
    write_jsonl([{"input": "é"}], tmp_path / "utf8.jsonl")
    assert (tmp_path / "utf8.jsonl").read_text(encoding="utf-8") == '{"input": "é"}\n'
