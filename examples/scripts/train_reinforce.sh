#!/usr/bin/env bash
# Reinforce (Minimalist, arXiv:2504.11343, Eq. 5): A = r with r in {-1, 1}, no baseline, PPO ratio and clipping.
#
# GPUs: 8 x 80 GB, one node (the authors' scripts use 8). Qwen2.5-Math-7B on Numina-Math.
# Paper (arXiv:2504.11343 Table 1, avg@16, T = 1.0): MATH500 80.6, Minerva Math 36.1, OlympiadBench 42.1,
#   average 52.9 (base model 23.6).
#
# Usage (docs/cluster.md): RAY_ADDRESS=http://HEAD:8265 bash examples/scripts/train_reinforce.sh [flags]
#        DRY_RUN=1 bash examples/scripts/train_reinforce.sh    # print the ray job submit command only
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/lib/common.sh"
source "$HERE/lib/minimal_rl.sh"

RUN_NAME=${RUN_NAME:-reinforce-qwen2.5-math-7b-numina}
paper_args=(
    "${MINIMAL_RL_ARGS[@]}"
    # preset: no filter, no baseline, no std; the {-1, 1} reward (--ext.signed_reward) matters here:
    # with {0, 1} wrong answers would get no gradient at all
    --algo.advantage.estimator reinforce_raw
    # authors' scripts: KL as a loss, k3 ("low_var_kl"), coefficient 0.001
    --algo.kl.use_loss --algo.kl.estimator k3 --algo.kl.init_coef 0.001
)
submit "${paper_args[@]}" "$@"
