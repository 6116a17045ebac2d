"""GPU step time: stock OpenRLHF vs openrlhf-ext on the same small configuration (issue 7).

For each comparison the same configuration (a ~0.5B model with random weights, built on the spot;
no download) is trained for a few steps by

* ``python -m openrlhf.cli.train_ppo_ray``      (stock OpenRLHF 0.11.2), and
* ``python -m openrlhf_ext.cli.train_ppo_ray``  (ours),

and the per-step timings OpenRLHF logs (``timing/generation``, ``timing/step_total``, ...) are read
back from each run's TensorBoard events. Printed: generation tokens/s, step time, and the ratio
ours / stock. Target: <= 1.02 for the stock estimators (ours adds only the advantage grid and a
few metrics). Then our Reinforce-Rej runs at several fractions of prompt groups that its filter
drops; the step time should fall with that fraction (dropped samples skip the forward passes and
the update).

Rewards. A random model never solves a maths problem, so every group would be all wrong. This
file therefore doubles as the ``--reward.remote_url`` reward file of every run (same file for
stock and ours): :func:`reward_func` returns 1 with a per-prompt probability written in the
prompt's label (``p=0.5``), drawn from a hash of the sampled text. Prompts with p = 0 or p = 1
give all-wrong / all-correct groups, which is how the filtered fraction is set. Timing only: no
learning is measured.

Needs one CUDA GPU (or more, ``--gpus``) and the GPU environment (vLLM, flash-attn, DeepSpeed);
``python benchmarks/gpu_step_time.py --help`` lists the knobs.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STOCK_MODULE = "openrlhf.cli.train_ppo_ray"
OURS_MODULE = "openrlhf_ext.cli.train_ppo_ray"
THIS_FILE = Path(__file__).resolve()
REPO = THIS_FILE.parents[1]

# Shape of the random model: SmolLM2's architecture (and real tokenizer) at about 0.5B parameters.
MODEL_SHAPE = {"num_layers": 28, "hidden_size": 1024, "num_heads": 16, "num_kv_heads": 4, "intermediate_size": 4096}


# ---------------------------------------------------------------------------------------------
# Reward file (loaded by OpenRLHF's reward workers; keep the module top level import-light)


def success_probability(label: str) -> float:
    """The per-prompt success probability encoded in a label ``p=<float>``."""
    if not label.startswith("p="):
        raise ValueError(f"timing reward: label {label!r} is not of the form 'p=<probability>'")
    p = float(label[2:])
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"timing reward: probability {p} outside [0, 1]")
    return p


def hashed_uniform(text: str) -> float:
    """A uniform number in [0, 1) determined by ``text`` (stable across processes and runs)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big") / 2.0**64


def reward_func(queries, prompts, labels):
    """OpenRLHF's reward-file interface: reward 1 with probability p of the label, else 0."""
    import torch

    rewards = torch.tensor(
        [float(hashed_uniform(q) < success_probability(lab)) for q, lab in zip(queries, labels, strict=True)]
    )
    return {"rewards": rewards, "scores": rewards, "extra_logs": {}}


# ---------------------------------------------------------------------------------------------
# Benchmark


def filtered_group_probability(p: float, n: int) -> float:
    """Probability that all n responses agree (all wrong or all correct) at success rate p."""
    return (1 - p) ** n + p**n


def build_prompts(path: Path, num_prompts: int, filtered_fraction: float) -> float:
    """Write the prompt file; returns the expected fraction of groups a both-sided filter drops.

    The first round(filtered_fraction * num_prompts) prompts get p = 0 and p = 1 alternately (always
    filtered); the others get p = 0.5. Prompts are shuffled deterministically.
    """
    n_filtered = round(filtered_fraction * num_prompts)
    labels = [("p=0" if i % 2 == 0 else "p=1") if i < n_filtered else "p=0.5" for i in range(num_prompts)]
    random.Random(0).shuffle(labels)
    with path.open("w", encoding="utf-8") as f:
        for i, label in enumerate(labels):
            a, b = 17 * i % 97, 31 * i % 89
            f.write(json.dumps({"prompt": f"Question {i}: what is {a} plus {b}? Answer:", "label": label}) + "\n")
    return n_filtered / num_prompts


def common_flags(args: argparse.Namespace, model: str, prompts: Path, run_dir: Path, tb_dir: Path, name: str) -> list[str]:
    g = str(args.gpus)
    return [
        "--actor.model_name_or_path", model,
        "--data.prompt_dataset", str(prompts),
        "--data.input_key", "prompt",
        "--data.label_key", "label",
        "--reward.remote_url", str(THIS_FILE),
        "--actor.num_nodes", "1", "--actor.num_gpus_per_node", g,
        "--ref.num_nodes", "1", "--ref.num_gpus_per_node", g,
        "--vllm.num_engines", g, "--vllm.tensor_parallel_size", "1",
        "--vllm.gpu_memory_utilization", str(args.vllm_gpu_util),
        "--train.colocate_all", "--vllm.enable_sleep", "--ds.enable_sleep",
        "--ds.zero_stage", "2", "--ds.param_dtype", "bf16",
        "--rollout.batch_size", str(args.prompts_per_step),
        "--rollout.n_samples_per_prompt", str(args.n),
        "--train.batch_size", str(args.train_batch),
        "--train.micro_batch_size", str(args.micro_batch),
        "--rollout.micro_batch_size", str(args.micro_batch),
        "--data.max_len", str(args.max_new_tokens + 128),
        "--rollout.max_new_tokens", str(args.max_new_tokens),
        "--algo.kl.init_coef", "0",
        "--train.num_episodes", "1",
        "--train.seed", "42",
        "--ckpt.path", str(run_dir / "ckpt"),
        "--ckpt.output_dir", str(run_dir / "model"),
        "--logger.tensorboard_dir", str(tb_dir),
        "--logger.wandb.run_name", name,
    ]


def run_training(module: str, flags: list[str], log_path: Path, timeout: float) -> None:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local Ray per run
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    with log_path.open("w") as log:
        proc = subprocess.run([sys.executable, "-m", module, *flags], stdout=log, stderr=subprocess.STDOUT,
                              cwd=log_path.parent, env=env, timeout=timeout)
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"{module} exited with {proc.returncode}; last lines of {log_path}:\n{tail}")


def read_scalars(event_dir: Path) -> dict[str, list[float]]:
    """Every ``train/*`` scalar of a TensorBoard run, ordered by step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(event_dir), size_guidance={"scalars": 0})
    acc.Reload()
    return {tag: [e.value for e in sorted(acc.Scalars(tag), key=lambda e: e.step)] for tag in acc.Tags()["scalars"]}


def summarize(scalars: dict[str, list[float]], warmup: int) -> dict[str, float]:
    """Medians over the steps after ``warmup`` (first steps: CUDA graphs, allocator, compilation)."""

    def steady(tag: str) -> list[float]:
        values = scalars.get(f"train/{tag}", [])
        if len(values) <= warmup:
            raise RuntimeError(f"only {len(values)} logged steps of {tag!r}; need more than --warmup={warmup}")
        return values[warmup:]

    gen_time = steady("timing/generation")
    tokens = [length * count for length, count in
              zip(steady("rollout/response_length_mean"), steady("rollout/num_samples"), strict=True)]
    summary = {
        "steps": len(gen_time),
        "step_s": statistics.median(steady("timing/step_total")),
        "generation_s": statistics.median(gen_time),
        "ppo_train_s": statistics.median(steady("timing/ppo_train")),
        "gen_tokens_per_s": statistics.median(t / s for t, s in zip(tokens, gen_time, strict=True)),
    }
    if "train/ext/kept_fraction" in scalars:
        summary["kept_fraction"] = statistics.mean(steady("ext/kept_fraction"))
    return summary


def check_environment() -> None:
    problems = []
    if importlib.util.find_spec("torch") is None:
        problems.append("torch is not installed")
    else:
        import torch

        if not torch.cuda.is_available():
            problems.append(f"no CUDA device (torch {torch.__version__}, torch.cuda.is_available() is False)")
    for module in ("vllm", "flash_attn", "deepspeed"):
        if importlib.util.find_spec(module) is None:
            problems.append(f"{module} is not installed (GPU environment: pip install '.[gpu]' or the GPU image)")
    if problems:
        sys.exit("gpu_step_time.py needs a GPU machine with the GPU environment:\n  - " + "\n  - ".join(problems))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", help="local HF model directory; default: build a random ~0.5B SmolLM2-shaped model")
    p.add_argument("--gpus", type=int, default=1, help="GPUs of this machine to use (all models colocated)")
    p.add_argument("--steps", type=int, default=6, help="training steps per run")
    p.add_argument("--warmup", type=int, default=2, help="first steps left out of the medians")
    p.add_argument("--prompts-per-step", type=int, default=64)
    p.add_argument("--n", type=int, default=8, help="responses per prompt")
    p.add_argument("--train-batch", type=int, default=256, help="samples per optimiser step")
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--vllm-gpu-util", type=float, default=0.5)
    p.add_argument("--estimators", nargs="*", default=["group_norm", "reinforce"],
                   help="stock estimators to compare (stock vs ours)")
    p.add_argument("--filter-fractions", nargs="*", type=float, default=[0.0, 0.25, 0.5, 0.75],
                   help="fractions of always-filtered prompt groups for the Reinforce-Rej runs")
    p.add_argument("--work-dir", type=Path, help="where models, prompts, logs go (default: a temp dir)")
    p.add_argument("--run-timeout", type=float, default=1800, help="seconds before one training run is killed")
    p.add_argument("--json-out", type=Path, help="also write all results as JSON here")
    args = p.parse_args(argv)
    if args.steps <= args.warmup:
        p.error(f"--steps ({args.steps}) must be larger than --warmup ({args.warmup})")
    if (args.prompts_per_step * args.n) % args.train_batch:
        p.error("--prompts-per-step x --n must be a multiple of --train-batch")
    if any(not 0.0 <= f < 1.0 for f in args.filter_fractions):
        p.error("--filter-fractions must be in [0, 1): at 1 every step is skipped")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    check_environment()
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="gpu_step_time-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"[gpu_step_time] work dir {work}", flush=True)

    model = args.model
    if model is None:
        from openrlhf_ext.models import build_tiny_model

        model = build_tiny_model(work / "model-0.5b-random", **MODEL_SHAPE)
    num_prompts = args.prompts_per_step * args.steps

    results: dict[str, dict] = {}

    def train(label: str, module: str, estimator: str, filtered: float, extra: list[str]) -> dict[str, float]:
        run_dir = work / label
        run_dir.mkdir(exist_ok=True)
        prompts = run_dir / "prompts.jsonl"
        build_prompts(prompts, num_prompts, filtered)
        flags = common_flags(args, model, prompts, run_dir, work / "tb", label)
        t0 = time.time()
        print(f"[gpu_step_time] {label}: {module} --algo.advantage.estimator {estimator} ...", flush=True)
        run_training(module, [*flags, "--algo.advantage.estimator", estimator, *extra], run_dir / "train.log",
                     args.run_timeout)
        summary = summarize(read_scalars(work / "tb" / label), args.warmup)
        summary["wall_s"] = time.time() - t0
        results[label] = summary
        return summary

    rows = []
    for estimator in args.estimators:
        stock = train(f"stock-{estimator}", STOCK_MODULE, estimator, 0.0, [])
        ours = train(f"ours-{estimator}", OURS_MODULE, estimator, 0.0, [])
        ratio = ours["step_s"] / stock["step_s"]
        results[f"ratio-{estimator}"] = {"step_time_ours_over_stock": ratio, "target": 1.02, "met": ratio <= 1.02}
        rows.append((f"stock {estimator}", stock, ""))
        rows.append((f"ours  {estimator}", ours, f"ours/stock {ratio:.3f} ({'<=' if ratio <= 1.02 else '>'} 1.02)"))

    rej_steps = []
    for fraction in args.filter_fractions:
        expected = fraction + (1 - fraction) * filtered_group_probability(0.5, args.n)
        summary = train(f"ours-reinforce_rej-f{fraction:.2f}", OURS_MODULE, "reinforce_rej", fraction, [])
        summary["expected_filtered_groups"] = expected
        rej_steps.append(summary["step_s"])
        kept = summary.get("kept_fraction", math.nan)
        rows.append((f"ours  reinforce_rej filtered~{expected:.2f}", summary, f"kept {kept:.2f}"))

    print("\nrun                                  gen tok/s   step s   gen s   train s")
    for name, s, note in rows:
        print(f"{name:<36} {s['gen_tokens_per_s']:>9.0f} {s['step_s']:>8.2f} {s['generation_s']:>7.2f} "
              f"{s['ppo_train_s']:>9.2f}   {note}")
    if len(rej_steps) > 1:
        falling = all(b < a for a, b in zip(rej_steps, rej_steps[1:], strict=False))
        results["reinforce_rej_step_time_falls"] = falling
        print(f"\nReinforce-Rej step time falls with the filtered fraction: {'yes' if falling else 'NO'} "
              f"({' > '.join(f'{s:.2f}' for s in rej_steps)} s)")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
