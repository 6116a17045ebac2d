#!/usr/bin/env bash
# Entry point of the GPU image: start this container as a Ray head or worker node, or run a command.
#
#   ray-node head   [extra `ray start` flags]   head node: GCS on $RAY_PORT, dashboard/jobs on 8265
#   ray-node worker [extra `ray start` flags]   worker node joining $RAY_HEAD_ADDRESS (host:port)
#   ray-node CMD ...                            anything else runs as is (default: bash)
#
# `--block` keeps `ray start` in the foreground, so the container lives as long as the node.
set -euo pipefail

role=${1:-bash}
case $role in
    head)
        shift
        exec ray start --head --block \
            --port="${RAY_PORT:-6379}" \
            --dashboard-host=0.0.0.0 \
            --dashboard-port="${RAY_DASHBOARD_PORT:-8265}" \
            "$@"
        ;;
    worker)
        shift
        if [ -z "${RAY_HEAD_ADDRESS:-}" ]; then
            echo "ray-node worker: set RAY_HEAD_ADDRESS=<head ip>:<port>, e.g. -e RAY_HEAD_ADDRESS=10.0.0.1:6379" >&2
            exit 2
        fi
        exec ray start --block --address="$RAY_HEAD_ADDRESS" "$@"
        ;;
    *)
        exec "$@"
        ;;
esac
