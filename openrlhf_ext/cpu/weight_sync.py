"""Policy -> generator weight sync over a stand-alone gloo group.

OpenRLHF broadcasts every parameter from DeepSpeed rank 0 to the vLLM engines
(``ActorPPOTrainer.broadcast_to_vllm``; ZeRO-3 parameters are gathered first) over a group made
by ``openrlhf.utils.distributed_util.stateless_init_process_group``, which is vLLM's PyNccl
communicator. On CPU we keep OpenRLHF's broadcast loop unchanged and swap only that group for
:class:`GlooBroadcastGroup`: a gloo process group built directly on a ``TCPStore``. It is
independent of the default ``torch.distributed`` group, which in the policy process already
belongs to DeepSpeed (that is also why Ray's own gloo collective, ``--vllm.sync_with_ray``, cannot
be used: it joins the default group).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

SYNC_TIMEOUT = timedelta(minutes=10)


class GlooBroadcastGroup:
    """A ``world_size``-process gloo group; rank 0 hosts the rendezvous store."""

    def __init__(
        self, master_address: str, master_port: int, rank: int, world_size: int, timeout: timedelta = SYNC_TIMEOUT
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside a group of {world_size}")
        self.rank = rank
        self.world_size = world_size
        self._store = dist.TCPStore(master_address, int(master_port), world_size, rank == 0, timeout=timeout)
        self._group = dist.ProcessGroupGloo(self._store, rank, world_size, timeout)

    def broadcast(self, tensor: torch.Tensor, src: int = 0, stream: Any = None) -> torch.Tensor:
        """In-place broadcast from ``src``, the call signature of vLLM's PyNcclCommunicator
        (``stream`` is a CUDA notion, accepted and ignored)."""
        if tensor.device.type != "cpu":
            raise ValueError(f"gloo weight sync takes CPU tensors, got one on {tensor.device}")
        if not tensor.is_contiguous():
            raise ValueError("gloo broadcast needs a contiguous tensor")
        self._group.broadcast(tensor, src).wait()
        return tensor


def stateless_gloo_group(
    master_address: str, master_port: int, rank: int, world_size: int, device: Any = None
) -> GlooBroadcastGroup:
    """Drop-in for ``openrlhf.utils.distributed_util.stateless_init_process_group`` on CPU."""
    return GlooBroadcastGroup(master_address, master_port, rank, world_size)

