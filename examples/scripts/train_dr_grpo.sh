#!/usr/bin/env bash
# Dr. GRPO ("Understanding R1-Zero-Like Training", arXiv:2503.20783, §3.2 and the "minimal recipe" of
# §1): A = r - mean_group (no std), loss summed over tokens and divided by a constant
# (n_sequences x 3000 generation tokens), no KL term.
#
# From the paper: Qwen2.5-Math-7B, MATH levels 3-5 questions, Qwen-Math template, math-verify reward
# in {0, 1}, beta = 0, 3000-token generation budget, 8 x A100 for 27 hours.
# From the authors' Oat script (sail-sg/understand-r1-zero, examples/qwen2.5-math-7b.sh): constant
# lr 1e-6, 128 prompts x 8 samples per rollout, 128 samples per optimiser step, one PPO epoch,
# prompts <= 1024 tokens, temperature 1.0, 20 passes over the 8k prompts.
#
# GPUs: 8 x A100 80 GB (paper: 8 x A100, 27 h).
# Paper (arXiv:2503.20783 Table 4, Oat-Zero-7B, greedy, 3000 tokens): AIME24 43.3, AMC 62.7, MATH500 80.0,
#   Minerva Math 30.1, OlympiadBench 41.0, average 51.4.
#
# Data: PROMPT_DATA = the 8.5k MATH level 3-5 training questions (the authors ship them as
# datasets/train/math_lvl3to5_8k, a `datasets.save_to_disk` folder with problem / answer columns).
#
# Usage (docs/cluster.md): RAY_ADDRESS=http://HEAD:8265 bash examples/scripts/train_dr_grpo.sh [flags]
#        DRY_RUN=1 bash examples/scripts/train_dr_grpo.sh    # print the ray job submit command only
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/lib/common.sh"

MODEL=${MODEL:-Qwen/Qwen2.5-Math-7B}
PROMPT_DATA=${PROMPT_DATA:-/workspace/data/math_lvl3to5_8k}
INPUT_KEY=${INPUT_KEY:-problem}
LABEL_KEY=${LABEL_KEY:-answer}

RUN_NAME=${RUN_NAME:-dr_grpo-qwen2.5-math-7b-math345}
paper_args=(
    --actor.model_name_or_path "$MODEL"
    --data.prompt_dataset "$PROMPT_DATA"
    --data.input_key "$INPUT_KEY"
    --data.label_key "$LABEL_KEY"
    --ext.template qwen_math
    # preset: baseline=group_mean, no std, loss aggregation seq-mean-token-sum-norm
    --algo.advantage.estimator dr_grpo
    --ext.loss_norm_tokens 3000
    --algo.kl.init_coef 0
    --rollout.batch_size 128
    --rollout.n_samples_per_prompt 8
    --train.batch_size 128
    --train.max_epochs 1
    --actor.adam.lr 1e-6
    --actor.lr_scheduler constant
    --actor.lr_warmup_ratio 0
    --rollout.temperature 1.0
    --rollout.top_p 1.0
    # legacy spellings, as in the authors' script: prompt <= 1024, generation <= 3000
    # (together they set --data.max_len 4024)
    --prompt_max_len 1024
    --generate_max_len 3000
    --train.num_episodes 20
)
submit "${paper_args[@]}" "$@"
