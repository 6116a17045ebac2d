"""How many Ray processes a CPU run starts, and whether they fit this machine.

OpenRLHF's layout defaults are a GPU node's: 8 policy ranks, 8 reference ranks, 8 critic ranks
(one per GPU). On a laptop they would start 17+ processes on a few cores. Two pure functions:

* :func:`laptop_layout`: every layout flag the user did not give becomes one rank / one engine
  (the CLI applies it before validation when there is no GPU and the run starts its own Ray);
* :func:`fit_problem`: the memory and cores the final layout needs against what the machine has,
  as the one line to stop with (``launch`` calls it before Ray starts).
"""

from __future__ import annotations

import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

GIB = 1024**3

# The flags that decide how many processes a run starts, as the CLI's flat dests.
LAYOUT_DESTS = (
    "actor.num_nodes", "actor.num_gpus_per_node", "ref.num_nodes", "ref.num_gpus_per_node",
    "critic.num_nodes", "critic.num_gpus_per_node", "reward.num_nodes", "reward.num_gpus_per_node",
    "vllm.num_engines",
)

# Set to 1 to start a layout that fit_problem refuses (its estimate is approximate).
SKIP_FIT_CHECK_ENV = "OPENRLHF_EXT_SKIP_FIT_CHECK"

# Resident memory before any model is loaded, measured on the 2-core machine (PSS, tiny model):
# the driver with GCS, raylet and Ray's agents; one actor process with torch, transformers and
# DeepSpeed imported; a vLLM engine (its Ray actor plus vLLM's engine-core process).
RAY_BASE_BYTES = int(1.5 * GIB)
ACTOR_BASE_BYTES = int(0.7 * GIB)
ENGINE_BASE_BYTES = int(1.5 * GIB)

# Adam training (ZeRO paper, per parameter): weights 2 + gradients 2 + fp32 master weights and
# two moments 12 bytes in bf16/fp16; in fp32, 4 + 4 + 8. ZeRO stage s shards the last
# SHARDED_BYTES[s] of them over the ranks of the model.
TRAIN_BYTES_PER_PARAM = 16
SHARDED_BYTES = {0: 0, 1: 12, 2: 14, 3: 16}
WEIGHT_BYTES = {"bf16": 2, "fp16": 2}  # anything else (fp32) is 4


@dataclass(frozen=True)
class Machine:
    cores: int
    available_bytes: int

    @classmethod
    def this(cls) -> Machine:
        """The cores this process may run on and the memory available now (not the total)."""
        import psutil

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return cls(cores=cores, available_bytes=psutil.virtual_memory().available)

    def describe(self) -> str:
        return f"{self.cores} cores, {self.available_bytes / GIB:.1f} GiB available"


def layout_reason(embedded: bool) -> str | None:
    """Why the laptop layout applies to this run; None when the stock layout stands (a machine
    with a GPU, or a Ray cluster given by ``RAY_ADDRESS``, whose resources are not this machine's)."""
    import torch

    own_ray = os.environ.get("RAY_ADDRESS", "local") in ("", "local")
    if own_ray and not torch.cuda.is_available():
        return f"no GPU: sized to this machine, {Machine.this().describe()}"
    return "the embedded demo runs one rank per role" if embedded else None


def laptop_layout(values: Mapping[str, Any], explicit: Collection[str]) -> dict[str, tuple[Any, int]]:
    """``dest -> (old, new)``: one rank / one engine for every layout flag not in ``explicit``
    (the flags the user gave), where the value is not already 1."""
    return {dest: (values[dest], 1) for dest in LAYOUT_DESTS if dest not in explicit and values[dest] != 1}


@dataclass(frozen=True)
class Layout:
    """The processes a run will start, per role (0 = the role does not run)."""

    policy: int
    reference: int
    critic: int
    reward: int
    engines: int

    @classmethod
    def of(cls, args: SimpleNamespace) -> Layout:
        """From the validated (nested) arguments, with OpenRLHF's rules for which roles run."""

        def ranks(section: SimpleNamespace) -> int:
            return section.num_nodes * section.num_gpus_per_node

        return cls(
            policy=ranks(args.actor),
            reference=ranks(args.ref) if args.algo.kl.init_coef > 0 else 0,
            critic=ranks(args.critic) if args.critic.model_name_or_path else 0,
            reward=ranks(args.reward) if not args.reward.remote_url else 0,
            engines=args.vllm.num_engines or 0,
        )

    @property
    def actors(self) -> int:
        """Ray actor processes, the trainer included."""
        return self.policy + self.reference + self.critic + self.reward + self.engines + 1

    def lockstep_ranks(self) -> int:
        """The largest group of ranks that run every collective together (one DeepSpeed model)."""
        return max(self.policy, self.reference, self.critic, self.reward)


def memory_needed(layout: Layout, params: int, zero_stage: int, param_dtype: str, engine_cache_bytes: int = 0) -> int:
    """Bytes the run needs at its peak, roughly: Ray, every actor's imports, the models' weights,
    Adam states of the trained models and the engines' KV cache."""
    weights = WEIGHT_BYTES.get(param_dtype, 4) * params

    def training(ranks: int) -> float:
        sharded = SHARDED_BYTES[zero_stage]
        return ranks * ((TRAIN_BYTES_PER_PARAM - sharded) + sharded / ranks) * params if ranks else 0

    models = (training(layout.policy) + training(layout.critic)
              + (layout.reference + layout.reward + layout.engines) * weights)
    return int(RAY_BASE_BYTES + layout.actors * ACTOR_BASE_BYTES
               + layout.engines * (ENGINE_BASE_BYTES + engine_cache_bytes) + models)


def fit_problem(layout: Layout, params: int | None, zero_stage: int, param_dtype: str, machine: Machine,
                engine_cache_bytes: int = 0) -> str | None:
    """Why ``layout`` cannot run on ``machine`` (None if it can), with the numbers it would need.

    Memory: :func:`memory_needed` against the available memory (``params`` None: model size
    unknown, not checked). Cores: the ranks of one model step through every collective together,
    so each needs a core of its own; more ranks than cores leaves every all-gather waiting for a
    descheduled rank.
    """
    problems = []
    if layout.lockstep_ranks() > machine.cores:
        problems.append(f"{layout.lockstep_ranks()} ranks of one model need {layout.lockstep_ranks()} cores")
    if params is not None:
        need = memory_needed(layout, params, zero_stage, param_dtype, engine_cache_bytes)
        if need > machine.available_bytes:
            problems.append(f"about {need / GIB:.1f} GiB of memory for {params / 1e6:.0f}M parameters")
    if not problems:
        return None
    return (f"this layout ({layout.policy} policy, {layout.reference} reference, {layout.critic} critic, "
            f"{layout.reward} reward ranks, {layout.engines} engines) needs {' and '.join(problems)}; "
            f"this machine has {machine.describe()}. Lower --actor/--ref/--critic.num_gpus_per_node or "
            f"--vllm.num_engines, or set {SKIP_FIT_CHECK_ENV}=1 to start anyway")


def count_parameters(model: str) -> int | None:
    """Parameters of the model ``model`` names (its config only, built on the meta device);
    None if transformers cannot build it (the actors will then fail with the loader's cause)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(model, trust_remote_code=True)
        with torch.device("meta"):
            built = AutoModelForCausalLM.from_config(config, trust_remote_code=True)
    except (OSError, ValueError, KeyError, ImportError):
        return None
    return sum(p.numel() for p in built.parameters())
