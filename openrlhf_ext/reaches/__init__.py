"""Every reach of openrlhf-ext into another library, in one table, applied through one mechanism.

OpenRLHF offers few injection points: its driver looks its classes up from module attributes, its
parser is built inside a ``__main__`` block, and its Ray modules import CUDA-only packages. Each row
of :data:`REACHES` says what we change, in which process, with what, and why. :func:`apply` installs
the rows of one process for good; :func:`scoped` installs them for a ``with`` block and restores the
originals. Both go through :mod:`openrlhf_ext.reaches.patching`: a target that an upgrade moved or
renamed stops the run at start-up (``AttributeError: ... no longer exists``), and
``tests/test_reaches.py`` resolves every target and replacement of the table.

Not in the table because they are configuration the libraries offer, not reaches: vLLM's
``worker_extension_cls`` (the CPU engines load :class:`openrlhf_ext.cpu.vllm_worker.CpuWorkerWrap`),
Ray's ``worker_process_setup_hook`` (runs :func:`openrlhf_ext.cpu.apply_worker_patches`), the
environment variables of :func:`openrlhf_ext.cpu.worker.cpu_worker_env` and vLLM's ``VLLM_PORT``
(:func:`openrlhf_ext.reaches.ports.vllm_port_env`). Our subclasses of
OpenRLHF's classes (``trainer/``) are ordinary subclasses; the rows below are what swaps them in.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Any

from openrlhf_ext.reaches.patching import Factory, Patch, always, apply_patches, patched


class Where(str, Enum):
    """The process (and moment) in which a reach applies."""

    IMPORT = "import"  # any process, before OpenRLHF's Ray modules are imported
    PARSER = "parser"  # the CLI process, while OpenRLHF's __main__ block builds and runs its parser
    DRIVER = "driver"  # the process calling OpenRLHF's train(args), for that call
    CPU_DRIVER = "cpu driver"  # the same process on the CPU platform, inside the driver reaches
    WORKER = "worker"  # every Ray worker, on every platform (Ray's worker_process_setup_hook)
    CPU_WORKER = "cpu worker"  # every Ray worker on the CPU platform (the same hook)
    POLICY_WORKER = "policy worker"  # the policy actor's Ray worker, before it builds its models
    CPU_ENGINE = "cpu engine"  # vLLM's EngineCore process on CPU (it imports worker_extension_cls)


@dataclass(frozen=True)
class Reach:
    """``target`` (``"module:attr"`` or ``"module:Class.attr"``) becomes ``value``, or ``wrap(original)``.

    ``value`` / ``wrap`` name an object as ``"module:name"``; they are imported only when the row is
    applied, so this table imports nothing of the layers above it.
    """

    target: str
    where: Where
    why: str
    value: str | None = None
    wrap: str | None = None

    @property
    def replacement(self) -> str:
        return self.value or self.wrap or ""

    def factory(self) -> Factory:
        obj = _resolve(self.replacement)
        return always(obj) if self.value else obj


_OPENRLHF_DRIVER = "openrlhf.cli.train_ppo_ray"
_ROLLOUT = "openrlhf.trainer.ray.vllm_engine"
_LAUNCHER = "openrlhf.trainer.ray.launcher"

REACHES: tuple[Reach, ...] = (
    # -- import: CUDA-only modules OpenRLHF's Ray modules import at module level ------------------
    Reach("sys:modules", Where.IMPORT, "a CPU build of flash-attn has no flash_attn_2_cuda, and vllm may be "
          "missing; stand-ins are registered only for what cannot be imported, so a GPU install is never shadowed",
          wrap="openrlhf_ext.reaches.stand_ins:with_stand_ins"),
    # -- parser: OpenRLHF builds and validates its arguments inside `if __name__ == "__main__":` -----
    Reach("argparse:ArgumentParser.parse_args", Where.PARSER, "the one moment the fully built stock parser is "
          "reachable: extend it (choices, --ext.*, legacy spellings), resolve presets, then let stock validation run",
          wrap="openrlhf_ext.cli.stock_main:parse_with_extensions"),
    # -- driver: the classes OpenRLHF's train() instantiates ----------------------------------------
    Reach("openrlhf.trainer.ppo_trainer:PPOTrainer", Where.DRIVER, "the controller actor: our experience maker "
          "(advantage grid, filtering), all-filtered steps skipped, metrics.jsonl / console / mlflow",
          value="openrlhf_ext.trainer.ppo_trainer:ExtPPOTrainer"),
    Reach(f"{_OPENRLHF_DRIVER}:PolicyModelActor", Where.DRIVER, "the policy actor: our actor trainer and "
          "policy loss, atomic checkpoints", value="openrlhf_ext.trainer.actors:ExtPolicyModelActor"),
    Reach(f"{_ROLLOUT}:RolloutRayActor", Where.DRIVER, "the engine actor: a seeded request for n responses becomes "
          "n requests with seeds of their own (vLLM's sampling generator is otherwise engine-wide, so a resumed run "
          "drew other samples)", value="openrlhf_ext.trainer.rollout_seeds:SeededRolloutRayActor"),
    # -- policy worker ------------------------------------------------------------------------------
    Reach("openrlhf.trainer.ray.ppo_actor:ActorPPOTrainer", Where.POLICY_WORKER, "stock model init builds the "
          "actor trainer by this name: ours has the vanilla loss, the seq-mean aggregations, training that skips rows which cannot change the gradient",
          value="openrlhf_ext.trainer.actors:ExtActorPPOTrainer"),
    Reach("openrlhf.trainer.ray.ppo_actor:iter_grad_accum_global_norm", Where.POLICY_WORKER, "the loss normalisers "
          "of an optimizer step count the rows the training skipped (they cannot change the gradient but count "
          "in stock's token / sequence means)", wrap="openrlhf_ext.trainer.train_rows:normalising_over_drawn_rows"),
    Reach("openrlhf.utils.deepspeed.deepspeed:DeepspeedStrategy.save_ckpt", Where.POLICY_WORKER, "stock deletes old "
          "checkpoints before writing the new one in place: write, verify, then switch `latest`",
          wrap="openrlhf_ext.trainer.checkpoints:atomic_save_ckpt_method"),
    # -- worker: every Ray worker ------------------------------------------------------------------
    Reach(f"{_LAUNCHER}:socket", Where.WORKER, "a group's MASTER_PORT is picked by binding port 0 and closing: "
          "in the ephemeral range, where any connection or port-0 bind may take it before the TCPStore binds it "
          "(EADDRINUSE); a port-0 bind takes a free port between Ray's worker ports and the ephemeral range",
          value="openrlhf_ext.reaches.ports:socket_module"),
    Reach("openrlhf.trainer.ray.ppo_actor:socket", Where.WORKER, "the same for the port of the policy -> vLLM "
          "weight-sync group", value="openrlhf_ext.reaches.ports:socket_module"),
    # -- CPU driver: resources and engines (the CPU platform) ----------------------------------------
    Reach(f"{_LAUNCHER}:RayActorGroup", Where.CPU_DRIVER, "actors ask for num_gpus=1: no GPU, no whole core, the "
          "role's node resource", value="openrlhf_ext.cpu.driver:CpuRayActorGroup"),
    Reach(f"{_OPENRLHF_DRIVER}:RayActorGroup", Where.CPU_DRIVER, "the driver's own reference to the same class",
          value="openrlhf_ext.cpu.driver:CpuRayActorGroup"),
    Reach(f"{_LAUNCHER}:placement_group", Where.CPU_DRIVER, '{"GPU": 1} bundles never become ready without GPUs',
          value="openrlhf_ext.cpu.driver:cpu_placement_group"),
    Reach(f"{_OPENRLHF_DRIVER}:placement_group", Where.CPU_DRIVER, "the driver's own reference to the same function",
          value="openrlhf_ext.cpu.driver:cpu_placement_group"),
    Reach(f"{_ROLLOUT}:placement_group", Where.CPU_DRIVER, "the engines' {\"GPU\": 1} bundles -> CPU shares on the "
          "openrlhf_rollout nodes", value="openrlhf_ext.cpu.driver:cpu_rollout_placement_group"),
    Reach(f"{_ROLLOUT}:RolloutRayActor", Where.CPU_DRIVER, "the engine actor in place (ours, from the driver row) with "
          "0 GPU / 0 CPU and CPU engine arguments (run dtype, worker extension, eager)",
          wrap="openrlhf_ext.cpu.rollout:cpu_engines"),
    # -- CPU worker: every Ray worker on the CPU platform -------------------------------------------
    Reach("torch.cuda:current_device", Where.CPU_WORKER, "OpenRLHF moves tensors to it",
          wrap="openrlhf_ext.cpu.worker:returning_cpu"),
    Reach("torch.cuda:set_device", Where.CPU_WORKER, "called unconditionally", wrap="openrlhf_ext.cpu.worker:returning_none"),
    Reach("torch.cuda:synchronize", Where.CPU_WORKER, "called unconditionally", wrap="openrlhf_ext.cpu.worker:returning_none"),
    Reach("torch.cuda:current_stream", Where.CPU_WORKER, "passed to the weight-sync broadcast",
          wrap="openrlhf_ext.cpu.worker:returning_none"),
    Reach("openrlhf.utils.deepspeed.deepspeed:init_device_mesh", Where.CPU_WORKER, 'a "cuda" device mesh -> "cpu"',
          wrap="openrlhf_ext.cpu.worker:mesh_on_cpu"),
    Reach("openrlhf.trainer.ppo_utils.replay_buffer:NaiveReplayBuffer.__init__", Where.CPU_WORKER, "its target "
          "device is cuda:N -> cpu", wrap="openrlhf_ext.cpu.worker:replay_buffer_on_cpu"),
    Reach("openrlhf.trainer.ray.ppo_actor:stateless_init_process_group", Where.CPU_WORKER, "vLLM's PyNccl group for "
          "the weight sync needs GPUs -> a gloo group", value="openrlhf_ext.cpu.weight_sync:stateless_gloo_group"),
    Reach("openrlhf.utils.utils:convert_to_torch_dtype", Where.CPU_WORKER, "accept --ds.param_dtype fp32 (the dtype "
          "of CPUs without native bf16)", value="openrlhf_ext.cpu.dtype:torch_dtype"),
    # -- CPU engine: vLLM's EngineCore process ------------------------------------------------------
    Reach("vllm.model_executor.layers.utils:dispatch_cpu_unquantized_gemm", Where.CPU_ENGINE, "vLLM's CPU backend "
          "drops each linear layer's plain weight after packing it, so a weight sync has nothing to load into: keep it",
          wrap="openrlhf_ext.cpu.vllm_worker:keeping_plain_weight"),
)


def _resolve(spec: str) -> Any:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def rows(where: Where) -> tuple[Reach, ...]:
    return tuple(reach for reach in REACHES if reach.where == where)


def _patches(where: Where) -> list[Patch]:
    return [(reach.target, reach.factory()) for reach in rows(where)]


def apply(where: Where, *, defer: bool = False) -> list[str]:
    """Install the reaches of ``where`` in this process for good; return the targets patched now.

    With ``defer`` a target in a module not imported yet is patched when that module is imported.
    """
    return apply_patches(_patches(where), defer=defer)


def import_replacements(where: Where) -> None:
    """Import now what the rows of ``where`` put in place (they are otherwise imported when applied)."""
    for reach in rows(where):
        reach.factory()


@contextmanager
def scoped(where: Where) -> Iterator[None]:
    """Install the reaches of ``where`` for the duration of the block, then restore the originals."""
    with ExitStack() as stack:
        for target, factory in _patches(where):
            stack.enter_context(patched(target, factory))
        yield


def table_markdown() -> str:
    """:data:`REACHES` as the markdown table of docs/architecture.md."""
    lines = ["| target | where | replaced by | why |", "|---|---|---|---|"]
    for reach in REACHES:
        how = f"`{reach.value}`" if reach.value else f"wrapped by `{reach.wrap}`"
        lines.append(f"| `{reach.target}` | {reach.where.value} | {how} | {reach.why} |")
    return "\n".join(lines)
