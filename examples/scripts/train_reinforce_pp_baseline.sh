#!/usr/bin/env bash
# REINFORCE++-baseline (arXiv:2501.03262, appendix): subtract the group mean of the 8 responses to a prompt,
# then whiten over the global batch (no per-group std); KL as a k2 loss instead of GRPO's k3.
#
# GPUs: 8 x 80 GB, one node (not stated in the paper). Qwen2.5-Math-7B base on MATH levels 3-5.
# Paper: REINFORCE++ reports no number for this variant in this setting; REINFORCE++ itself reaches
#   AIME24 pass@8 21.04, AMC23 pass@8 60.47, MATH500 pass@1 72.00 (Table 4).
#
# Usage (docs/cluster.md): RAY_ADDRESS=http://HEAD:8265 bash examples/scripts/train_reinforce_pp_baseline.sh [flags]
#        DRY_RUN=1 bash examples/scripts/train_reinforce_pp_baseline.sh    # print the ray job submit command only
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/lib/common.sh"
source "$HERE/lib/reinforce_pp.sh"

RUN_NAME=${RUN_NAME:-reinforce_pp_baseline-qwen2.5-math-7b-math345}
paper_args=(
    "${REINFORCE_PP_ARGS[@]}"
    # preset: baseline=group_mean, std_scale=whiten, stats=token
    --algo.advantage.estimator reinforce_baseline
    # appendix: k2 KL (as a loss), beta 0.001
    --algo.kl.use_loss --algo.kl.estimator k2 --algo.kl.init_coef 0.001
)
submit "${paper_args[@]}" "$@"
