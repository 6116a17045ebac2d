# shellcheck shell=bash
# Shared plumbing of the recipes in examples/scripts/ (sourced, not run). See docs/cluster.md.
#
# A recipe defines RUN_NAME and an array of the paper's flags, then calls
#     submit "${paper_args[@]}" "$@"
# which prepends the cluster layout below and appends the user's own flags (the last one wins,
# so `bash train_grpo.sh --actor.adam.lr 2e-6` overrides the recipe), and runs
#     ray job submit --runtime-env-json ... -- python3 -m openrlhf_ext.cli.train_ppo_ray FLAGS
#
# Environment (all optional):
#   RAY_ADDRESS      dashboard of the cluster's head node     (default http://127.0.0.1:8265)
#   NNODES, GPUS_PER_NODE  GPUs the job spreads over           (default 1 x 8)
#   VLLM_TP          tensor-parallel size of each vLLM engine  (default 1)
#   VLLM_GPU_UTIL    vLLM's share of GPU memory                (default 0.6; models are colocated)
#   MAX_TOKENS_PER_GPU  DeepSpeed micro-batch token budget     (default 16384)
#   RUN_ROOT         shared directory for checkpoints / models / tensorboard; must be the same
#                    path on every node                        (default /workspace/runs, see the image)
#   SAVE_STEPS       checkpoint every N steps                  (default 20)
#   CODE_MODE        how the code reaches the cluster:
#                      working_dir  upload this checkout (edits need no image rebuild)  [default]
#                      py_modules   upload only the openrlhf_ext package
#                      image        upload nothing; use the openrlhf-ext installed in the image
#   WANDB_API_KEY    when set, forwarded to the job and wandb logging is switched on
#   WANDB_PROJECT    wandb project                             (default openrlhf-ext)
#   FORWARD_ENV      further variables copied into the job's environment when set
#                    (default: HF_TOKEN HF_ENDPOINT NCCL_DEBUG NCCL_SOCKET_IFNAME GLOO_SOCKET_IFNAME
#                    NCCL_IB_DISABLE, and mlflow's MLFLOW_EXPERIMENT_NAME MLFLOW_TRACKING_USERNAME
#                    MLFLOW_TRACKING_PASSWORD MLFLOW_TRACKING_TOKEN for --ext.mlflow_uri)
#   NO_WAIT=1        submit and return instead of following the logs
#   IN_RAY_JOB=1     run the trainer here instead of submitting a job: for an entrypoint that is
#                    already a Ray job (a KubeRay RayJob, examples/k8s/)
#   DRY_RUN=1        print the `ray job submit` command (secrets masked) instead of running it
#                    (with IN_RAY_JOB=1: the trainer's command)

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"

RAY_ADDRESS=${RAY_ADDRESS:-http://127.0.0.1:8265}
NNODES=${NNODES:-1}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
VLLM_TP=${VLLM_TP:-1}
VLLM_GPU_UTIL=${VLLM_GPU_UTIL:-0.6}
MAX_TOKENS_PER_GPU=${MAX_TOKENS_PER_GPU:-16384}
RUN_ROOT=${RUN_ROOT:-/workspace/runs}
SAVE_STEPS=${SAVE_STEPS:-20}
CODE_MODE=${CODE_MODE:-working_dir}
WANDB_PROJECT=${WANDB_PROJECT:-openrlhf-ext}
FORWARD_ENV=${FORWARD_ENV:-HF_TOKEN HF_ENDPOINT NCCL_DEBUG NCCL_SOCKET_IFNAME GLOO_SOCKET_IFNAME NCCL_IB_DISABLE \
MLFLOW_EXPERIMENT_NAME MLFLOW_TRACKING_USERNAME MLFLOW_TRACKING_PASSWORD MLFLOW_TRACKING_TOKEN}

die() {
    echo "error: $*" >&2
    exit 2
}

# JSON string literal of $1 (callers pass values through require_plain first).
json_str() {
    local s=${1//\\/\\\\}
    printf '"%s"' "${s//\"/\\\"}"
}

require_plain() {
    case $1 in
        *$'\n'* | *$'\t'*) die "$2: a newline or tab cannot go into the job's runtime env" ;;
    esac
}

# The job's runtime environment (https://docs.ray.io/en/latest/ray-core/handling-dependencies.html).
# $1 = 1 to mask secret values (for printing).
runtime_env_json() {
    local mask=$1 env_json name value sep=""
    # The driver calls ray.init(runtime_env=...) again (OpenRLHF's and our launcher's worker env
    # vars, our worker setup hook). Ray refuses to merge that with the job's runtime env when both
    # name the same env var unless this is set; the driver reads those vars from its own
    # environment, which the job's env_vars already populate, so overriding loses nothing.
    env_json='"RAY_OVERRIDE_JOB_RUNTIME_ENV": "1"'
    for name in WANDB_API_KEY $FORWARD_ENV; do
        [ -n "${!name:-}" ] || continue
        value=${!name}
        require_plain "$value" "$name"
        if [ "$mask" = 1 ] && [[ $name == *KEY* || $name == *TOKEN* || $name == *PASSWORD* ]]; then
            value="<set>"
        fi
        env_json+=", $(json_str "$name"): $(json_str "$value")"
    done
    require_plain "$REPO_ROOT" "the checkout's path"
    case $CODE_MODE in
        working_dir)
            local excludes="" pattern
            for pattern in .git .venv ckpt runs outputs __pycache__ .pytest_cache .ruff_cache .hypothesis; do
                excludes+="$sep$(json_str "$pattern")"
                sep=", "
            done
            printf '{"working_dir": %s, "excludes": [%s], "env_vars": {%s}}' \
                "$(json_str "$REPO_ROOT")" "$excludes" "$env_json"
            ;;
        py_modules)
            printf '{"py_modules": [%s], "env_vars": {%s}}' "$(json_str "$REPO_ROOT/openrlhf_ext")" "$env_json"
            ;;
        image)
            printf '{"env_vars": {%s}}' "$env_json"
            ;;
        *) die "CODE_MODE=$CODE_MODE: choose working_dir, py_modules or image" ;;
    esac
}

# Placement shared by every recipe: all models (actor, reference, critic, vLLM engines) are
# colocated on every GPU and take turns (vLLM and DeepSpeed sleep while the other works).
cluster_args() {
    [ "$NNODES" -ge 1 ] && [ "$GPUS_PER_NODE" -ge 1 ] || die "NNODES and GPUS_PER_NODE must be >= 1"
    local total=$((NNODES * GPUS_PER_NODE))
    [ $((total % VLLM_TP)) -eq 0 ] || die "NNODES*GPUS_PER_NODE=$total is not a multiple of VLLM_TP=$VLLM_TP"
    local role
    for role in actor ref critic; do
        CLUSTER_ARGS+=(--"$role".num_nodes "$NNODES" --"$role".num_gpus_per_node "$GPUS_PER_NODE")
    done
    CLUSTER_ARGS+=(
        --vllm.num_engines $((total / VLLM_TP))
        --vllm.tensor_parallel_size "$VLLM_TP"
        --vllm.gpu_memory_utilization "$VLLM_GPU_UTIL"
        --vllm.enable_prefix_caching
        --train.colocate_all
        --vllm.enable_sleep
        --ds.enable_sleep
        --ds.zero_stage 3
        --ds.param_dtype bf16
        --ds.packing_samples
        --actor.gradient_checkpointing_enable
        --train.dynamic_batch_enable
        --train.max_tokens_per_gpu "$MAX_TOKENS_PER_GPU"
        # forward-only passes (old / reference log-probs) keep no activations for backward
        --rollout.max_tokens_per_gpu $((2 * MAX_TOKENS_PER_GPU))
    )
}

# Checkpoints and metrics of run $RUN_NAME. --ckpt.load_enable makes a resubmitted job resume
# from the newest checkpoint under --ckpt.path (a fresh run simply finds none).
run_args() {
    local run_dir="$RUN_ROOT/$RUN_NAME"
    CLUSTER_ARGS+=(
        --ckpt.path "$run_dir/ckpt"
        --ckpt.output_dir "$run_dir/model"
        --ckpt.save_steps "$SAVE_STEPS"
        --ckpt.max_num 3
        --ckpt.load_enable
        --logger.tensorboard_dir "$RUN_ROOT/tensorboard"
        --logger.wandb.run_name "$RUN_NAME"
    )
    if [ -n "${WANDB_API_KEY:-}" ]; then
        # The key itself travels in the runtime env (wandb reads WANDB_API_KEY); the flag only
        # has to be non-empty to switch the logger on.
        CLUSTER_ARGS+=(--logger.wandb.key env:WANDB_API_KEY --logger.wandb.project "$WANDB_PROJECT")
    fi
}

submit() {
    [ -n "${RUN_NAME:-}" ] || die "the recipe must set RUN_NAME"
    CLUSTER_ARGS=()
    cluster_args
    run_args
    local -a job=(ray job submit --address "$RAY_ADDRESS" --submission-id "$RUN_NAME-$(date +%Y%m%d-%H%M%S)")
    if [ "${NO_WAIT:-0}" = 1 ]; then
        job+=(--no-wait)
    fi
    local -a train=(python3 -m openrlhf_ext.cli.train_ppo_ray "${CLUSTER_ARGS[@]}" "$@")
    if [ "${IN_RAY_JOB:-0}" = 1 ]; then
        if [ "${DRY_RUN:-0}" = 1 ]; then
            printf '%q ' "${train[@]}"
            printf '\n'
            return 0
        fi
        exec "${train[@]}"
    fi
    local runtime_env
    if [ "${DRY_RUN:-0}" = 1 ]; then
        # die() inside $(...) only leaves the subshell: propagate its status.
        runtime_env=$(runtime_env_json 1) || exit $?
        printf '%q ' "${job[@]}" --runtime-env-json "$runtime_env" -- "${train[@]}"
        printf '\n'
        return 0
    fi
    command -v ray >/dev/null || die "the ray CLI is not on PATH: run inside the image or pip install 'ray[default]==2.55.0'"
    runtime_env=$(runtime_env_json 0) || exit $?
    exec "${job[@]}" --runtime-env-json "$runtime_env" -- "${train[@]}"
}
