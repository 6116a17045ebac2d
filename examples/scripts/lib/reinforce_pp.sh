# shellcheck shell=bash
# Setting of the "RL from scratch" experiment of REINFORCE++ (Hu et al. 2025, arXiv:2501.03262, §4.2.3), sourced
# by train_reinforce_pp.sh and train_reinforce_pp_baseline.sh.
#
# From the paper: Qwen2.5-Math base model; about 8,000 short prompts mostly from MATH levels 3-5;
# every exploration step samples 32 questions x 8 answers; actor lr 5e-7; gamma 1.0; clip
# eps 0.2; KL coefficient beta 0.001. All hyper-parameters are shared by the compared estimators.
# Ours, where the paper is silent: the 7B model, 1024 prompt + 3072 response tokens (the model's
# 4096-token context), 2 optimiser steps per rollout (train batch 128 of the 256 samples), the
# qwen_math prompt template, reward in {0, 1}, OpenRLHF's default lr schedule, 20 episodes.
# Reported metric: pass@8 on AIME24 and AMC23, pass@1 on MATH500 (arXiv:2501.03262 Table 4).
#
# Data: PROMPT_DATA is any HF dataset name or local path (jsonl / parquet / save_to_disk folder)
# with the question in INPUT_KEY and the reference answer in LABEL_KEY.

MODEL=${MODEL:-Qwen/Qwen2.5-Math-7B}
PROMPT_DATA=${PROMPT_DATA:-/workspace/data/math_lvl3to5_8k}
INPUT_KEY=${INPUT_KEY:-problem}
LABEL_KEY=${LABEL_KEY:-answer}

# shellcheck disable=SC2034  # used by the recipe that sources this file
REINFORCE_PP_ARGS=(
    --actor.model_name_or_path "$MODEL"
    --data.prompt_dataset "$PROMPT_DATA"
    --data.input_key "$INPUT_KEY"
    --data.label_key "$LABEL_KEY"
    --ext.template qwen_math
    --rollout.batch_size 32
    --rollout.n_samples_per_prompt 8
    --train.batch_size 128
    --actor.adam.lr 5e-7
    --actor.eps_clip 0.2
    --algo.advantage.gamma 1.0
    --data.max_len 4096
    --rollout.max_new_tokens 3072
    --rollout.temperature 1.0
    --train.num_episodes 20
)
