"""Build a prompt file for OpenRLHF's ``--data.prompt_dataset`` (templates of docs/rewards.md).

    python -m openrlhf_ext.data.build --source gsm8k_train --template qwen_math --out prompts.jsonl
    python -m openrlhf_ext.data.build --source my_problems.jsonl --template r1 --out prompts.jsonl
    python -m openrlhf_ext.data.build --source synthetic:1:2000 --template r1 --out arith.jsonl

Then train with ``--data.prompt_dataset prompts.jsonl --data.input_key input --data.label_key label``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from openrlhf_ext.data.benchmarks import BENCHMARKS
from openrlhf_ext.data.datasets import DEFAULT_SEED, INPUT_KEY, LABEL_KEY, DatasetFormatError, build_prompt_file
from openrlhf_ext.data.templates import TEMPLATE_NAMES


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True,
                        help=f"comma-separated: benchmark names ({', '.join(BENCHMARKS)}), files, HF datasets, "
                             "synthetic:D[:N], reasoning_gym:TASK[:N]")
    parser.add_argument("--out", required=True)
    parser.add_argument("--template", choices=TEMPLATE_NAMES, default="qwen_math")
    parser.add_argument("--tokenizer", default=None, help="local tokenizer directory (template 'chat')")
    parser.add_argument("--problem-key", default="problem")
    parser.add_argument("--answer-key", default="answer")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    try:
        path = build_prompt_file(
            args.source, args.out, args.template, tokenizer, args.problem_key, args.answer_key, args.limit, args.seed
        )
    except DatasetFormatError as err:  # a bad file or an unreachable dataset: its one line, no traceback
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    print(f"wrote {path} (use --data.input_key {INPUT_KEY} --data.label_key {LABEL_KEY})")


if __name__ == "__main__":
    main()
