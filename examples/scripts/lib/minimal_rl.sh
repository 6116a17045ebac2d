# shellcheck shell=bash
# Setting shared by the Qwen2.5-Math-7B runs of "A Minimalist Approach to LLM Reasoning: from
# Rejection Sampling to Reinforce" (Xiong et al. 2025, arXiv:2504.11343, §3 and Table 1), sourced by
# train_raft.sh, train_raft_pp.sh, train_reinforce.sh, train_reinforce_rej.sh, train_grpo.sh, train_ppo.sh.
#
# From the paper: Numina-Math prompts (~860k problems with reference answers); the model's own
# chat template plus "... output the final answer within \boxed{}" (our qwen_math template);
# binary reward r in {-1, 1} (arXiv:2504.11343 §2); AdamW, lr 1e-6; 1024 prompts per iteration; n = 4
# responses per prompt; training mini-batch 512; at most 4096 tokens.
# From the authors' verl scripts (RLHFlow/Minimal-RL) where the paper is silent or ambiguous:
#   - 1024 prompt + 3072 response tokens: "4096 tokens" is the whole context of Qwen2.5-Math-7B;
#   - verl counts the mini-batch in prompts, so 512 prompts x n samples per optimiser step;
#   - constant lr without warm-up (verl's default), one pass over the prompts;
#   - token-mean loss aggregation (verl's default, although Eq. 5/8 write a per-sequence mean);
#   - the KL term differs per algorithm and is set by each recipe.
# Reported metric: avg@16 at temperature 1.0 with 4096 tokens on MATH500 / Minerva Math /
# OlympiadBench; the base model scores 41.3 / 11.0 / 18.6, average 23.6.
#
# Data: PROMPT_DATA is any HF dataset name or local path (jsonl / parquet / save_to_disk folder)
# with the question in INPUT_KEY and the short reference answer in LABEL_KEY (the math reward
# compares the response's final answer with it). NuminaMath-CoT has no answer column: the default
# path is the copy with the last \boxed{} of each solution extracted into "answer", made once as in
# docs/cluster.md ("Data"), as the authors' preprocessing did.

MODEL=${MODEL:-Qwen/Qwen2.5-Math-7B}
PROMPT_DATA=${PROMPT_DATA:-/workspace/data/numina_math_cot}
INPUT_KEY=${INPUT_KEY:-problem}
LABEL_KEY=${LABEL_KEY:-answer}

# n = 4 unless the recipe says otherwise (PPO samples one response per prompt).
MINIMAL_RL_N=${MINIMAL_RL_N:-4}

# shellcheck disable=SC2034  # used by the recipe that sources this file
MINIMAL_RL_ARGS=(
    --actor.model_name_or_path "$MODEL"
    --data.prompt_dataset "$PROMPT_DATA"
    --data.input_key "$INPUT_KEY"
    --data.label_key "$LABEL_KEY"
    --ext.template qwen_math
    --ext.signed_reward
    --rollout.batch_size 1024
    --rollout.n_samples_per_prompt "$MINIMAL_RL_N"
    --train.batch_size $((512 * MINIMAL_RL_N))
    --actor.adam.lr 1e-6
    --actor.lr_scheduler constant
    --actor.lr_warmup_ratio 0
    --actor.eps_clip 0.2
    --data.max_len 4096
    --rollout.max_new_tokens 3072
    --rollout.temperature 1.0
    --train.num_episodes 1
)
