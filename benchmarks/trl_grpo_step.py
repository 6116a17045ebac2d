"""TRL's ``GRPOTrainer`` on the configuration of ``benchmarks/bench_step.py``'s GRPO runs (its own process).

    python benchmarks/trl_grpo_step.py --model DIR --prompts FILE --n 4 --prompts-per-step 8 \
        --max-new-tokens 48 --micro-batch 32 --steps 3 --lr 1e-5 --dtype bf16 --out result.json

The tool a laptop user would pick instead of a Ray pipeline: one process, generation with
transformers ``generate`` (``use_vllm=False``), the policy trained by the Hugging Face ``Trainer``.
Matched to our runs: model, prompt file (the chat-templated prompts), group size, generation length,
sampling temperature 1, one optimizer step per P x n samples (in micro-batches of ``--micro-batch``),
one PPO epoch, no KL term (``beta=0``; our runs use ``--algo.kl.init_coef 0``), std-normalised group
advantages (``scale_rewards="group"``, i.e. ``group_norm``), loss averaged over the step's tokens
(``dapo``, OpenRLHF's ``token-mean``), AdamW with OpenRLHF's betas (0.9, 0.95), constant learning rate. The reward is the same math reward file our runs
load, called with the decoded prompt + response as OpenRLHF calls it, with the settings of
``OPENRLHF_EXT_REWARD_*`` (the benchmark passes ours).

Writes ``--out``: the wall time of every optimizer step (from one step's end to the next; the first
from the start of training), the reward TRL logs for it, and the start-up time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--prompts", required=True, help="prompt JSONL (input / label keys), already templated")
    parser.add_argument("--n", type=int, required=True, help="samples per prompt")
    parser.add_argument("--prompts-per-step", type=int, required=True)
    parser.add_argument("--max-new-tokens", type=int, required=True)
    parser.add_argument("--micro-batch", type=int, required=True, help="samples per forward / backward")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--lr", type=float, required=True)
    parser.add_argument("--dtype", choices=["bf16", "fp32"], required=True)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, required=True)
    opts = parser.parse_args()

    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from openrlhf_ext.data import INPUT_KEY, LABEL_KEY
    from openrlhf_ext.rewards.math_reward_func import reward_func

    rows = [json.loads(line) for line in Path(opts.prompts).read_text().splitlines() if line.strip()]
    dataset = Dataset.from_list([{"prompt": r[INPUT_KEY], "label": r[LABEL_KEY]} for r in rows])

    def math_reward(prompts, completions, label, **_):
        queries = [p + c for p, c in zip(prompts, completions, strict=True)]
        return reward_func(queries, prompts, label)["rewards"].tolist()

    samples_per_step = opts.prompts_per_step * opts.n
    config = GRPOConfig(
        output_dir=str(opts.out.parent / "trl"),
        use_cpu=True,
        # bf16 as DeepSpeed's bf16 mode runs it: float32 master weights and optimizer state, bf16 compute
        # (autocast). bf16 weights under torch's AdamW would keep its state in bf16 too.
        bf16=opts.dtype == "bf16",
        model_init_kwargs={"dtype": torch.float32},
        per_device_train_batch_size=opts.micro_batch,
        gradient_accumulation_steps=samples_per_step // opts.micro_batch,
        num_generations=opts.n,
        max_completion_length=opts.max_new_tokens,
        temperature=1.0,
        num_iterations=1,
        beta=0.0,
        scale_rewards="group",
        loss_type="dapo",
        learning_rate=opts.lr,
        adam_beta2=0.95,
        lr_scheduler_type="constant",
        warmup_steps=0,
        max_steps=opts.steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=opts.seed,
        dataloader_num_workers=0,
    )

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.last = 0.0
            self.steps: list[dict] = []
            self.train_start = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self.train_start = self.last = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            self.steps.append({"step_s": now - self.last})
            self.last = now

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs and "reward" in logs and self.steps:
                self.steps[-1]["reward"] = logs["reward"]

    clock = StepClock()
    trainer = GRPOTrainer(model=opts.model, reward_funcs=math_reward, args=config, train_dataset=dataset,
                          callbacks=[clock])
    trainer.train()
    opts.out.write_text(json.dumps({
        "startup_s": clock.train_start - started,
        "steps": clock.steps,
        "torch_threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
