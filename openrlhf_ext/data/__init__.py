"""Prompt templates (docs/rewards.md), prompt-file loading/building, benchmarks by name, and embedded
problem sources."""

from openrlhf_ext.data.benchmarks import BENCHMARKS
from openrlhf_ext.data.datasets import (
    INPUT_KEY,
    LABEL_KEY,
    DatasetFormatError,
    benchmark_names,
    build_prompt_file,
    build_prompt_records,
    is_benchmark,
    load_problems,
    read_rows,
    write_jsonl,
)
from openrlhf_ext.data.synthetic import generate_problems
from openrlhf_ext.data.templates import TEMPLATE_NAMES, apply_template

__all__ = [
    "BENCHMARKS",
    "INPUT_KEY",
    "LABEL_KEY",
    "TEMPLATE_NAMES",
    "DatasetFormatError",
    "apply_template",
    "benchmark_names",
    "build_prompt_file",
    "build_prompt_records",
    "generate_problems",
    "is_benchmark",
    "load_problems",
    "read_rows",
    "write_jsonl",
]
