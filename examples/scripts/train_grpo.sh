#!/usr/bin/env bash
# GRPO (as in Minimalist, arXiv:2504.11343, Eq. 6): A = (r - mean_group) / std_group over the n = 4
# responses of a prompt.
#
# GPUs: 8 x 80 GB, one node (the authors' scripts use 8). Qwen2.5-Math-7B on Numina-Math.
# Paper (arXiv:2504.11343 Table 1, avg@16, T = 1.0): MATH500 81.6, Minerva Math 36.7, OlympiadBench 43.3,
#   average 53.9 (base model 23.6).
#
# Usage (docs/cluster.md): RAY_ADDRESS=http://HEAD:8265 bash examples/scripts/train_grpo.sh [flags]
#        DRY_RUN=1 bash examples/scripts/train_grpo.sh    # print the ray job submit command only
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/lib/common.sh"
source "$HERE/lib/minimal_rl.sh"

RUN_NAME=${RUN_NAME:-grpo-qwen2.5-math-7b-numina}
paper_args=(
    "${MINIMAL_RL_ARGS[@]}"
    # OpenRLHF's name for GRPO; preset: baseline=group_mean, std_scale=group
    --algo.advantage.estimator group_norm
    # authors' script (verl's GRPO recipe): KL as a loss, k3 ("low_var_kl"), coefficient 0.001
    --algo.kl.use_loss --algo.kl.estimator k3 --algo.kl.init_coef 0.001
)
submit "${paper_args[@]}" "$@"
