"""The compute dtype of the policy, the reference model and the vLLM engine on a CPU.

bfloat16 is fast only on CPUs with bf16 dot-product units (x86: AVX512-BF16 or AMX; Arm: the
``bf16`` extension). Elsewhere (AVX2-only x86, most laptops and many cloud VMs) it is emulated:
a 256x576 @ 576x1536 matmul forward+backward took 13 ms in float32 and 304 ms in bfloat16 on a
2-core AVX2 AMD EPYC, while on a 2-core AMD EPYC with AVX512-BF16 it took 12 ms in float32 and
2.8 ms in bfloat16 (docs/cpu.md). So the default follows the CPU, and ``--ds.param_dtype`` wins.
"""

from __future__ import annotations

from pathlib import Path

import torch

# OpenRLHF's --ds.param_dtype names, plus "fp32" (DeepSpeed runs in float32 when neither its bf16
# nor its fp16 section is enabled).
PARAM_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}

# /proc/cpuinfo flags of native bf16 arithmetic: x86 AVX512-BF16 and AMX, Arm's BF16 extension.
NATIVE_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The feature flags of this CPU (``flags`` on x86, ``Features`` on Arm)."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text() if path.exists() else ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_param_dtype(flags: frozenset[str] | None = None) -> tuple[str, str]:
    """``(param_dtype, reason)`` for this CPU: ``bf16`` with native bf16 units, else ``fp32``."""
    flags = cpu_flags() if flags is None else flags
    native = sorted(flags & NATIVE_BF16_FLAGS)
    if native:
        return "bf16", f"this CPU has native bf16 units ({', '.join(native)})"
    best = "AVX512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return "fp32", f"this CPU ({best}) has no native bf16 units: bf16 would be emulated, ~20x slower per matmul"


def torch_dtype(param_dtype: str) -> torch.dtype:
    """OpenRLHF's ``convert_to_torch_dtype`` with ``fp32`` added."""
    try:
        return PARAM_DTYPES[param_dtype]
    except KeyError:
        raise ValueError(f"--ds.param_dtype must be one of {', '.join(PARAM_DTYPES)}, got {param_dtype!r}") from None


def vllm_dtype_name(param_dtype: str) -> str:
    """The vLLM ``dtype`` argument matching a policy ``--ds.param_dtype``."""
    return str(torch_dtype(param_dtype)).removeprefix("torch.")
