#!/usr/bin/env bash
# PPO (the baseline of Minimalist, arXiv:2504.11343): GAE with a critic initialised from the policy,
# one response per prompt.
#
# GPUs: 8 x 80 GB, one node (the authors' scripts use 8); actor, critic, reference and vLLM share
#   them. Qwen2.5-Math-7B on Numina-Math.
# Paper (arXiv:2504.11343 Table 1, avg@16, T = 1.0): MATH500 79.6, Minerva Math 34.8, OlympiadBench 41.1,
#   average 51.8 (base model 23.6).
#
# Usage (docs/cluster.md): RAY_ADDRESS=http://HEAD:8265 bash examples/scripts/train_ppo.sh [flags]
#        DRY_RUN=1 bash examples/scripts/train_ppo.sh    # print the ray job submit command only
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/lib/common.sh"
# authors' PPO script: n = 1 (the paper's n = 4 is for the group-based methods)
MINIMAL_RL_N=1
source "$HERE/lib/minimal_rl.sh"

RUN_NAME=${RUN_NAME:-ppo-qwen2.5-math-7b-numina}
paper_args=(
    "${MINIMAL_RL_ARGS[@]}"
    --algo.advantage.estimator gae
    --algo.advantage.gamma 1.0
    --algo.advantage.lambd 1.0
    --critic.model_name_or_path "$MODEL"
    --critic.adam.lr 1e-5
    --critic.lr_scheduler constant
    --critic.lr_warmup_ratio 0
    # authors' script: KL in the reward (k1), coefficient 0.001
    --algo.kl.estimator k1 --algo.kl.init_coef 0.001
)
submit "${paper_args[@]}" "$@"
