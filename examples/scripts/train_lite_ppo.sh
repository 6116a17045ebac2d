#!/usr/bin/env bash
# Lite PPO ("Part I: Tricks or Traps? A Deep Dive into RL for LLM Reasoning", arXiv:2508.08221):
# critic-free PPO loss with only two tricks, advantage =
# (r - mean_group) / std_batch (batch std of the raw rewards, as in the authors' framework ROLL) and
# token-level loss aggregation (token-mean).
#
# From the paper: Qwen3 base models (4B, 8B) on math datasets of three difficulties; Lite PPO beats
# GRPO and DAPO on base models, especially on the hard data (arXiv:2508.08221 §3.3). We take no
# hyper-parameters from the paper, so the values below are ours, chosen to match the other recipes:
# Qwen3-8B-Base, MATH levels 3-5, 128 prompts x 8 samples, 4 optimiser steps per rollout, lr 1e-6
# constant, clip 0.2, no KL, 1024 prompt + 4096 response tokens, qwen_math template, reward {0, 1}.
#
# GPUs: 8 x 80 GB, one node (our choice).
# Paper: no headline number taken over; the claim to check is Lite PPO >= GRPO on the same data
#   (run train_grpo.sh with MODEL / PROMPT_DATA set to the values below for the comparison).
#
# Usage (docs/cluster.md): RAY_ADDRESS=http://HEAD:8265 bash examples/scripts/train_lite_ppo.sh [flags]
#        DRY_RUN=1 bash examples/scripts/train_lite_ppo.sh    # print the ray job submit command only
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/lib/common.sh"

MODEL=${MODEL:-Qwen/Qwen3-8B-Base}
PROMPT_DATA=${PROMPT_DATA:-/workspace/data/math_lvl3to5_8k}
INPUT_KEY=${INPUT_KEY:-problem}
LABEL_KEY=${LABEL_KEY:-answer}

RUN_NAME=${RUN_NAME:-lite_ppo-qwen3-8b-base-math345}
paper_args=(
    --actor.model_name_or_path "$MODEL"
    --data.prompt_dataset "$PROMPT_DATA"
    --data.input_key "$INPUT_KEY"
    --data.label_key "$LABEL_KEY"
    --ext.template qwen_math
    # preset: baseline=group_mean, std_scale=batch, stats=sample, loss aggregation token-mean
    --algo.advantage.estimator lite_ppo
    --algo.kl.init_coef 0
    --rollout.batch_size 128
    --rollout.n_samples_per_prompt 8
    --train.batch_size 256
    --actor.adam.lr 1e-6
    --actor.lr_scheduler constant
    --actor.lr_warmup_ratio 0
    --actor.eps_clip 0.2
    --data.max_len 5120
    --rollout.max_new_tokens 4096
    --rollout.temperature 1.0
    --train.num_episodes 10
)
submit "${paper_args[@]}" "$@"
