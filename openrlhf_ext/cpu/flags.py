"""What the CPU platform does to the stock flags: the ones it refuses and the ones it rewrites.

Both read the CLI's flat namespace (``{"vllm.sync_backend": "nccl", ...}``) and are applied by the
CLI while it resolves the configuration, before ``--print_config`` and before Ray: the printed
configuration is the one that runs, and a refused flag is one line and exit code 2.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# On/off flags naming a feature that exists only with CUDA, and why.
CUDA_ONLY_SWITCHES = {
    "ds.load_in_4bit": "bitsandbytes 4-bit loading needs CUDA",
    "ds.use_liger_kernel": "Liger kernels are Triton (GPU) kernels",
    "train.enable_ema": "OpenRLHF's EMA update moves weights to 'cuda'",
}

# Sizes above 1 that only CUDA provides, and why.
CUDA_ONLY_SIZES = {
    "ds.ring_attn_size": "ring attention needs flash-attn's varlen CUDA kernels",
    "vllm.tensor_parallel_size": "a CPU engine has no tensor parallelism; use --vllm.num_engines for more engines",
}


def cpu_refusal(values: Mapping[str, Any]) -> str | None:
    """Why the CPU platform cannot run these flags (starting with the flag), or None."""
    for dest, reason in CUDA_ONLY_SWITCHES.items():
        if values[dest]:
            return f"--{dest}: not available on CPU: {reason}"
    for dest, reason in CUDA_ONLY_SIZES.items():
        if values[dest] > 1:
            return f"--{dest} {values[dest]}: not available on CPU: {reason}"
    return None


# The stock flags the CPU platform rewrites, and why (said at launch for those it changed).
ADAPTED = {
    "ds.attn_implementation": "flash-attention kernels need CUDA",
    "vllm.num_engines": "OpenRLHF generates only through vLLM engines; one on CPU",
    "vllm.sync_backend": "weights go to the vLLM engines over gloo, not NCCL / CUDA IPC",
    "vllm.sync_with_ray": "Ray's gloo collective would join DeepSpeed's default group",
    "vllm.enable_sleep": "vLLM's sleep mode frees CUDA memory; a CPU engine has none to free",
}


def cpu_adaptations(values: Mapping[str, Any]) -> dict[str, Any]:
    """``dest -> value``: stock values that can only mean CUDA, as their CPU equivalents (only those
    that differ: adapting an adapted configuration changes nothing)."""
    wanted: dict[str, Any] = {"vllm.sync_backend": "gloo", "vllm.sync_with_ray": False, "vllm.enable_sleep": False}
    attention = str(values["ds.attn_implementation"])
    if "flash" in attention or "/" in attention:  # flash_attention_2/3, or a kernels-hub "org/flash-attn"
        wanted["ds.attn_implementation"] = "sdpa"
    if not values["vllm.num_engines"]:
        wanted["vllm.num_engines"] = 1
    return {dest: value for dest, value in wanted.items() if values[dest] != value}
