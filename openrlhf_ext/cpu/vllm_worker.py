"""The vLLM worker extension for CPU engines: OpenRLHF's ``WorkerWrap`` receiving weights over gloo.

vLLM mixes ``worker_extension_cls`` into its worker, which runs in the EngineCore process that vLLM
*spawns*: nothing patched in the Ray actor reaches it, so this class is what the CPU engine is told
to load (by name) instead of ``openrlhf.trainer.ray.vllm_worker_wrap.WorkerWrap``. It keeps the
stock RPC names and arguments (``broadcast_to_vllm`` calls them unchanged) and changes what CPU
needs:

* the sync group is a gloo group (vLLM's PyNccl communicator needs GPUs); received tensors live in
  CPU memory and are cast to the engine's dtype when the policy trains in another one;
* vLLM's CPU backend packs every linear layer's weight into a kernel-specific layout after loading
  and then drops the plain weight, so ``load_weights`` has nothing to load into. This module, which
  vLLM imports before it loads the model, keeps the plain weights (the ``cpu engine`` reach of :data:`openrlhf_ext.reaches.REACHES`);
  after the last tensor of a sync the layers are packed again from them. The cost is one extra
  copy of the linear weights in the engine's memory.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from openrlhf.trainer.ray.vllm_worker_wrap import WorkerWrap

from openrlhf_ext.cpu.weight_sync import GlooBroadcastGroup
from openrlhf_ext.reaches import Where, apply


def keeping_plain_weight(original: Callable) -> Callable:
    def dispatch_cpu_unquantized_gemm(layer: torch.nn.Module, remove_weight: bool) -> None:
        original(layer, remove_weight=False)

    return dispatch_cpu_unquantized_gemm


apply(Where.CPU_ENGINE)


def repack_cpu_linear_layers(model: torch.nn.Module) -> int:
    """Rebuild the packed CPU kernels of every linear layer from its (updated) plain weight."""
    from vllm.model_executor.layers import utils

    count = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if hasattr(module, "cpu_linear") and isinstance(weight, torch.Tensor) and weight.ndim == 2:
            utils.dispatch_cpu_unquantized_gemm(module, remove_weight=False)
            count += 1
    return count


class CpuWorkerWrap(WorkerWrap):
    def init_process_group(
        self, master_address, master_port, rank_offset, world_size, group_name, backend="gloo", use_ray=False
    ) -> None:
        if use_ray:
            raise NotImplementedError(
                "--vllm.sync_with_ray is not supported on CPU: Ray's gloo collective joins the default "
                "torch.distributed group, which DeepSpeed owns in the policy process"
            )
        rank = torch.distributed.get_rank() + rank_offset if torch.distributed.is_initialized() else rank_offset
        self._model_update_with_ray = False
        self._model_update_group = GlooBroadcastGroup(master_address, master_port, rank, world_size)

    def update_weight(self, name: str, dtype: torch.dtype, shape: Any, empty_cache: bool = False) -> None:
        """Receive one tensor of a sync; ``empty_cache`` marks the sync's last tensor (stock)."""
        weight = torch.empty(shape, dtype=dtype)
        self._model_update_group.broadcast(weight, src=0)
        model = self.model_runner.model
        model.load_weights(weights=[(name, weight.to(self.model_config.dtype))])
        if empty_cache:
            repack_cpu_linear_layers(model)

    def update_weight_cuda_ipc(self, *args, **kwargs) -> None:
        raise NotImplementedError("CUDA IPC weight sync needs GPUs; on CPU the sync backend is gloo")
