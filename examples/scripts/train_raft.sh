#!/usr/bin/env bash
# RAFT (Minimalist, arXiv:2504.11343, Eq. 1): rejection sampling fine-tuning. Of the n = 4 responses to each prompt only
# the correct ones are kept, each with advantage 1, and trained on with -log pi (no ratio, no clip).
#
# GPUs: 8 x 80 GB, one node (the authors' scripts use 8). Qwen2.5-Math-7B on Numina-Math.
# Paper (arXiv:2504.11343 Table 1, avg@16, T = 1.0): MATH500 77.4, Minerva Math 34.4, OlympiadBench 37.8,
#   average 49.9 (base model 23.6).
#
# Usage (docs/cluster.md): RAY_ADDRESS=http://HEAD:8265 bash examples/scripts/train_raft.sh [flags]
#        DRY_RUN=1 bash examples/scripts/train_raft.sh    # print the ray job submit command only
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/lib/common.sh"
source "$HERE/lib/minimal_rl.sh"

RUN_NAME=${RUN_NAME:-raft-qwen2.5-math-7b-numina}
paper_args=(
    "${MINIMAL_RL_ARGS[@]}"
    # preset: positive_only=on, policy loss "vanilla" (-A log pi)
    --algo.advantage.estimator raft
    # authors' script: KL as a loss, k3 ("low_var_kl"), coefficient 0.001
    --algo.kl.use_loss --algo.kl.estimator k3 --algo.kl.init_coef 0.001
)
submit "${paper_args[@]}" "$@"
