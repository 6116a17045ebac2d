"""Prompt templates (docs/rewards.md), prompt-file loading/building, and embedded problem sources."""

from openrlhf_ext.data.datasets import (
    INPUT_KEY,
    LABEL_KEY,
    DatasetFormatError,
    build_prompt_file,
    build_prompt_records,
    load_problems,
    read_rows,
    write_jsonl,
)
from openrlhf_ext.data.synthetic import generate_problems
from openrlhf_ext.data.templates import TEMPLATE_NAMES, apply_template

__all__ = [
    "INPUT_KEY",
    "LABEL_KEY",
    "TEMPLATE_NAMES",
    "DatasetFormatError",
    "apply_template",
    "build_prompt_file",
    "build_prompt_records",
    "generate_problems",
    "load_problems",
    "read_rows",
    "write_jsonl",
]
