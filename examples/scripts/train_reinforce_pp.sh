#!/usr/bin/env bash
# REINFORCE++ (arXiv:2501.03262, Eq. 8-10): per-token KL penalty in the reward (k1), return of each token =
# outcome reward minus the future KL penalties, then global whitening of the whole batch (token-level
# mean and std; no per-prompt baseline).
#
# GPUs: 8 x 80 GB, one node (not stated in the paper). Qwen2.5-Math-7B base on MATH levels 3-5.
# Paper (arXiv:2501.03262 Table 4): AIME24 pass@8 21.04 (GRPO 18.96), AMC23 pass@8 60.47 (GRPO 59.22),
#   MATH500 pass@1 72.00 (GRPO 73.00).
#
# Usage (docs/cluster.md): RAY_ADDRESS=http://HEAD:8265 bash examples/scripts/train_reinforce_pp.sh [flags]
#        DRY_RUN=1 bash examples/scripts/train_reinforce_pp.sh    # print the ray job submit command only
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/lib/common.sh"
source "$HERE/lib/reinforce_pp.sh"

RUN_NAME=${RUN_NAME:-reinforce_pp-qwen2.5-math-7b-math345}
paper_args=(
    "${REINFORCE_PP_ARGS[@]}"
    # OpenRLHF's name for REINFORCE++; preset: std_scale=whiten, stats=token
    --algo.advantage.estimator reinforce
    # Eq. 8-9: KL in the reward, k1 (log-ratio), beta 0.001. Legacy spellings, as in the paper's
    # OpenRLHF scripts.
    --kl_estimator k1 --init_kl_coef 0.001
)
submit "${paper_args[@]}" "$@"
