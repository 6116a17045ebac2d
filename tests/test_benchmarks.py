"""Benchmarks by name (docs/evaluation.md): the registry, loading its datasets with ``datasets`` (from local
copies laid out as on the Hub: tests reach no network), the one-line error when a dataset cannot be
fetched, local paths winning over names, and the training inputs built from names."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import REPO_ROOT

from openrlhf_ext.data import BENCHMARKS, DatasetFormatError, benchmark_names, is_benchmark, load_problems
from openrlhf_ext.data.benchmarks import gsm8k_final_answer, table_markdown


def test_documented_table_is_the_registry():
    doc = (REPO_ROOT / "docs" / "evaluation.md").read_text(encoding="utf-8")
    assert table_markdown() in doc, "regenerate the table in docs/evaluation.md from data.benchmarks.table_markdown()"
    assert {"math500", "aime24", "amc23", "minerva_math", "olympiadbench", "gsm8k", "gsm8k_train"} <= set(BENCHMARKS)


def test_gsm8k_final_answer():
    assert gsm8k_final_answer("She pays 3 * 360 = <<3*360=1080>>1080 dollars.\n#### 1,080") == "1080"
    assert gsm8k_final_answer("The temperature drops to -4.\n#### -4 ") == "-4"
    with pytest.raises(ValueError, match="no '#### <number>'"):
        gsm8k_final_answer("The answer is 12.")


def test_every_name_loads_from_its_dataset(hub_benchmarks):
    for name, expected in hub_benchmarks.items():
        assert load_problems(name) == expected, name
    # The suite's lists: one answer, or several joined; GSM8K: the number after ####, without its comma.
    assert load_problems("olympiadbench")[1]["answer"] == "-3, 3"
    assert [p["answer"] for p in load_problems("gsm8k_train")][-2:] == ["1680", "26"]
    assert load_problems("gsm8k_train", limit=3) == hub_benchmarks["gsm8k_train"][:3]


def test_a_changed_dataset_is_named(hub_benchmarks, monkeypatch):
    import dataclasses

    gsm8k = BENCHMARKS["gsm8k"]
    monkeypatch.setitem(BENCHMARKS, "gsm8k", dataclasses.replace(gsm8k, split="validation"))
    with pytest.raises(DatasetFormatError, match=r"^gsm8k: .*gsm8k \(main, split validation\): Unknown split"):
        load_problems("gsm8k")
    monkeypatch.setitem(BENCHMARKS, "gsm8k", dataclasses.replace(gsm8k, answer_field="solution"))
    with pytest.raises(DatasetFormatError, match=r"^gsm8k: .*\[0\]: missing key\(s\) \['solution'\]"):
        load_problems("gsm8k")


def test_a_local_path_wins_over_a_name(tmp_path, monkeypatch):
    import datasets

    monkeypatch.chdir(tmp_path)
    datasets.Dataset.from_list([{"problem": "What is 6 * 7?", "answer": "42"}]).save_to_disk("math500")
    assert not is_benchmark("math500") and is_benchmark("aime24")
    assert load_problems("math500") == [{"problem": "What is 6 * 7?", "answer": "42"}]
    assert benchmark_names("prompts.jsonl, aime24,math500,gsm8k") == ["aime24", "gsm8k"]


def test_an_unreachable_dataset_is_one_line(tmp_path):
    """Offline (HF_HUB_OFFLINE, an empty cache): the evaluator exits 2 with one line naming the dataset."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run([sys.executable, "-m", "openrlhf_ext.cli.evaluate", "--eval_data", "aime24,math500"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    [line] = result.stderr.splitlines()  # then the reason as `datasets` words it
    assert line.startswith("python -m openrlhf_ext.cli.evaluate: error: aime24: lkevinzc/math-eval (split aime) "
                           "could not be fetched from the Hugging Face Hub (offline?): "), line


def test_training_builds_the_named_prompt_and_eval_sets(tmp_path, tiny_model_dir, hub_benchmarks, caplog):
    """``--prompt_data gsm8k_train --eval_dataset math500,aime24`` without a template: written into the run
    folder with the chat template, one datasource per eval benchmark, and checked as any prompt file."""
    from transformers import AutoTokenizer

    from openrlhf_ext.cli.train_config import resolve_train_config
    from openrlhf_ext.data import apply_template
    from openrlhf_ext.job.inputs import prepare_inputs

    out = tmp_path / "run"
    args = resolve_train_config(["--pretrain", tiny_model_dir, "--prompt_data", "gsm8k_train", "--eval_dataset",
                                 "math500,aime24", "--advantage_estimator", "reinforce", "--generate_max_len", "16",
                                 "--max_len", "256", "--save_path", str(out)])
    assert args.ext.template is None
    with caplog.at_level("INFO", logger="openrlhf_ext"):
        env = prepare_inputs(args)
    assert args.ext.template == "chat" and env["OPENRLHF_EXT_REWARD_TEMPLATE"] == "chat"
    assert "gsm8k_train, math500, aime24: benchmark name(s), prompts built with --ext.template chat" in caplog.text
    assert (args.data.input_key, args.data.label_key, args.data.apply_chat_template) == ("input", "label", False)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = [json.loads(line) for line in (out / "prompts.jsonl").read_text().splitlines()]
    assert args.data.prompt_dataset == str(out / "prompts.jsonl")
    assert [(p["problem"], p["label"], p["datasource"]) for p in prompts] == [
        (q["problem"], q["answer"], "gsm8k_train") for q in hub_benchmarks["gsm8k_train"]]
    assert prompts[0]["input"] == apply_template(prompts[0]["problem"], "chat", tokenizer)
    evals = [json.loads(line) for line in (out / "eval_prompts.jsonl").read_text().splitlines()]
    assert args.eval.dataset == str(out / "eval_prompts.jsonl")
    assert [(p["label"], p["datasource"]) for p in evals] == [
        *((q["answer"], "math500") for q in hub_benchmarks["math500"]),
        *((q["answer"], "aime24") for q in hub_benchmarks["aime24"])]
