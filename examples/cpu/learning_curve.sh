#!/usr/bin/env bash
# A longer CPU run of the embedded demo (about 50 steps, ~30 min on 2 cores) that prints the mean
# training reward of the first and the last 5 steps. Usage:
#   bash examples/cpu/learning_curve.sh [ESTIMATOR] [extra train flags...]
set -euo pipefail
cd "$(dirname "$0")/../.."
ESTIMATOR="${1:-reinforce_rej}"
shift || true
OUT="runs/learning_curve_${ESTIMATOR}"
make -s setup
rm -rf "$OUT"
.venv/bin/python -m openrlhf_ext.cli.train_ppo_ray --advantage_estimator "$ESTIMATOR" \
    --ext.num_prompts 400 --save_path "$OUT" "$@"
.venv/bin/python - "$OUT" <<'PY'
import sys

from openrlhf_ext.reporting.curves import head_tail_means, load_metrics

records = load_metrics(f"{sys.argv[1]}/metrics.jsonl")
first, last = head_tail_means(records, "ext/correct_fraction", k=5)
print(f"{len(records)} steps: fraction correct, first 5 steps {first:.3f} -> last 5 steps {last:.3f}")
first, last = head_tail_means(records, "ext/reward_mean", k=5)
print(f"mean training reward, first 5 steps {first:.3f} -> last 5 steps {last:.3f}")
PY
