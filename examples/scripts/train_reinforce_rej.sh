#!/usr/bin/env bash
# Reinforce-Rej (Minimalist, arXiv:2504.11343, "Reinforce + remove both"): Reinforce (A = r,
# r in {-1, 1}) after dropping every prompt whose n = 4 responses are all correct or all wrong.
#
# GPUs: 8 x 80 GB, one node (the authors' scripts use 8). Qwen2.5-Math-7B on Numina-Math.
# Paper: no Table 1 entry; the paper reports final performance comparable to GRPO (53.9 average on
#   this setting) with better KL efficiency and a more stable entropy (ablation, Fig. 4).
#
# Usage (docs/cluster.md): RAY_ADDRESS=http://HEAD:8265 bash examples/scripts/train_reinforce_rej.sh [flags]
#        DRY_RUN=1 bash examples/scripts/train_reinforce_rej.sh    # print the ray job submit command only
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/lib/common.sh"
source "$HERE/lib/minimal_rl.sh"

RUN_NAME=${RUN_NAME:-reinforce_rej-qwen2.5-math-7b-numina}
paper_args=(
    "${MINIMAL_RL_ARGS[@]}"
    # preset: filter=both, no baseline, no std, PPO loss
    --algo.advantage.estimator reinforce_rej
    # authors' script: KL as a loss, k3 ("low_var_kl"), coefficient 0.001
    --algo.kl.use_loss --algo.kl.estimator k3 --algo.kl.init_coef 0.001
)
submit "${paper_args[@]}" "$@"
