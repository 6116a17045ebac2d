"""Plain helpers shared by several test modules (fixtures live in conftest.py)."""

from __future__ import annotations

import json
from pathlib import Path

from openrlhf_ext.reaches.ports import RendezvousSocket

REPO_ROOT = Path(__file__).resolve().parents[1]
HALF_FILTERED_REWARD = str(REPO_ROOT / "tests" / "data" / "half_filtered_reward.py")
# The suite's own problems, in the prompt-file schema {"problem": str, "answer": str}: gsm8k_style.jsonl
# (8 word problems, integer answers), math_style.jsonl (16 problems whose answers take the forms the
# reward meets in MATH-style benchmarks: tuples, fractions, roots, intervals, bases, text, degrees,
# polynomials, matrices, lists, decimals, percents, expressions without digits).
MATH_DATA = REPO_ROOT / "tests" / "data" / "math"


def read_problems(name: str) -> list[dict[str, str]]:
    """The records of tests/data/math/<name>.jsonl."""
    return [json.loads(line) for line in (MATH_DATA / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()]


def write_hub_dataset(root: Path, splits: dict[str, list[dict]], config: str = "default") -> str:
    """A local folder laid out as a Hugging Face dataset repository (one parquet file per split, the
    README's ``configs:`` naming them), read by ``datasets.load_dataset`` as it reads the Hub's; returns
    its path, to stand in for a Hub id."""
    import datasets

    (root / config).mkdir(parents=True)
    entries = []
    for split, rows in splits.items():
        datasets.Dataset.from_list(rows).to_parquet(root / config / f"{split}-00000-of-00001.parquet")
        entries.append(f"  - split: {split}\n    path: {config}/{split}-*")
    (root / "README.md").write_text(f"---\nconfigs:\n- config_name: {config}\n  data_files:\n" + "\n".join(entries)
                                    + "\n---\n", encoding="utf-8")
    return str(root)


def free_port() -> int:
    """A free port outside the kernel's ephemeral range (openrlhf_ext.reaches.ports: a port-0 port may be
    taken by any connection or port-0 bind before the test binds it)."""
    with RendezvousSocket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def read_metrics(run_dir: Path) -> list[dict]:
    """Every line of run_dir/metrics.jsonl, raw (no per-step dedup, unlike reporting.curves.load_metrics)."""
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def small_run_flags(model: str, out: Path) -> list[str]:
    """A two-step CPU training run of the tiny model (legacy flag spellings, as users type them)."""
    return [
        "--pretrain", model, "--n_samples_per_prompt", "4", "--ext.template", "chat",
        "--ext.num_prompts", "8", "--ext.difficulty", "0", "--rollout_batch_size", "4",
        "--micro_rollout_batch_size", "4", "--train_batch_size", "16", "--micro_train_batch_size", "1",
        "--generate_max_len", "12", "--max_len", "160", "--actor_num_gpus_per_node", "1",
        "--ref_num_gpus_per_node", "1", "--vllm_num_engines", "1", "--zero_stage", "3",
        "--attn_implementation", "sdpa", "--save_path", str(out), "--actor_learning_rate", "1e-4",
        "--actor.entropy_coef", "0",
    ]
