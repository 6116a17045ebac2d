"""How many Ray processes a CPU run starts, and whether they fit this machine.

OpenRLHF's layout defaults are a GPU node's: 8 policy ranks, 8 reference ranks, 8 critic ranks
(one per GPU). On a laptop they would start 17+ processes on a few cores. Two pure functions:

* :func:`laptop_layout`: every layout flag the user did not give becomes one rank / one engine
  (the CLI applies it before validation on the CPU platform when the run starts its own Ray, and
  for the embedded demo; the launch names them in one line, :func:`sized_layout_line`);
* :func:`fit_problem`: the memory and cores the final layout needs against what the machine has,
  as one line: an error when it can never fit, a warning when the memory available now is short
  (``launch`` calls it through :func:`check_fit` before Ray starts).
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

# Resident memory (PSS) before the models' own bytes, measured on the 2-core machine with the tiny
# model (peak 5.85 GiB for policy + reference + engine + trainer): the driver with GCS, raylet and
# Ray's agents 2.0; one actor process with torch, transformers and DeepSpeed imported 0.6; a vLLM
# engine's worker and engine-core processes 0.8 besides its Ray actor and its KV cache. With
# SmolLM2-135M (README's example: micro-batches of 8 x 320 tokens) the estimate below is 11.5 GiB,
# the measured peak 12.3 GiB.
RAY_BASE_BYTES = int(2.0 * GIB)
ACTOR_BASE_BYTES = int(0.6 * GIB)
ENGINE_BASE_BYTES = int(0.8 * GIB)

# Adam training (ZeRO paper, per parameter): weights 2 + gradients 2 + fp32 master weights and
# two moments 12 bytes in bf16/fp16; in fp32, 4 + 4 + 8. ZeRO stage s shards the last
# SHARDED_BYTES[s] of them over the ranks of the model.
TRAIN_BYTES_PER_PARAM = 16
SHARDED_BYTES = {0: 0, 1: 12, 2: 14, 3: 16}
WEIGHT_BYTES = {"bf16": 2, "fp16": 2}  # anything else (fp32) is 4
LOGIT_COPIES = 3


@dataclass(frozen=True)
class Machine:
    cores: int
    total_bytes: int
    available_bytes: int

    @classmethod
    def this(cls) -> Machine:
        """The cores this process may run on, the memory installed and the memory available now."""
        import psutil

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        memory = psutil.virtual_memory()
        return cls(cores=cores, total_bytes=memory.total, available_bytes=memory.available)

    def describe(self) -> str:
        return f"{self.cores} cores, {self.available_bytes / GIB:.1f} of {self.total_bytes / GIB:.1f} GiB available"


def laptop_layout(values: Mapping[str, Any], explicit: Collection[str]) -> dict[str, tuple[Any, int]]:
    """``dest -> (old, new)``: one rank / one engine for every layout flag not in ``explicit``
    (the flags the user gave), where the value is not already 1."""
    return {dest: (values[dest], 1) for dest in LAYOUT_DESTS if dest not in explicit and values[dest] != 1}


def sized_layout_line(args: SimpleNamespace, machine: Machine) -> str | None:
    """The one line naming the layout flags the CLI sized (provenance ``cpu``) and why; None if none."""
    provenance = getattr(args, "provenance", None)
    sized = [dest for dest in LAYOUT_DESTS if getattr(provenance, dest, None) == "cpu"]
    if not sized:
        return None

    def value(dest: str) -> Any:
        section, name = dest.split(".")
        return getattr(getattr(args, section), name)

    listed = ", ".join(f"--{dest} {value(dest)}" for dest in sized)
    return (f"{listed} (OpenRLHF's defaults are a GPU node's, 8 ranks per role; no GPU: sized to this machine, "
            f"{machine.describe()}; give a flag to choose)")


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


@dataclass(frozen=True)
class Workload:
    """What each model process holds: the model's size, how it is trained and batched."""

    params: int
    vocab: int
    zero_stage: int
    param_dtype: str
    micro_batch_tokens: int  # the largest micro-batch (training or scoring) times --data.max_len
    engine_cache_bytes: int = 0  # KV cache each engine reserves


def memory_needed(layout: Layout, work: Workload) -> int:
    """Bytes the run needs at its peak, roughly: Ray, every actor's imports, the models' weights,
    Adam states of the trained models, the logits of a micro-batch in every model process and the
    engines' KV cache."""
    weights = WEIGHT_BYTES.get(work.param_dtype, 4) * work.params
    # float32 logits, their log-softmax and (training) their gradient: for a small model with a
    # large vocabulary these, not the weights, are the largest tensors.
    logits = LOGIT_COPIES * 4 * work.micro_batch_tokens * work.vocab

    def training(ranks: int) -> float:
        sharded = SHARDED_BYTES[work.zero_stage]
        return ranks * ((TRAIN_BYTES_PER_PARAM - sharded) + sharded / ranks) * work.params if ranks else 0

    scoring = layout.policy + layout.critic + layout.reference + layout.reward
    models = (training(layout.policy) + training(layout.critic)
              + (layout.reference + layout.reward + layout.engines) * weights + scoring * logits)
    return int(RAY_BASE_BYTES + layout.actors * ACTOR_BASE_BYTES
               + layout.engines * (ENGINE_BASE_BYTES + work.engine_cache_bytes) + models)


@dataclass(frozen=True)
class Fit:
    """What :func:`fit_problem` found: ``fatal`` stops the run, otherwise ``message`` is a warning."""

    message: str
    fatal: bool


def fit_problem(layout: Layout, work: Workload | None, machine: Machine) -> Fit | None:
    """Whether ``layout`` fits ``machine`` (None if it does), with the numbers it would need.

    Fatal: more ranks of one model than cores (they step through every collective together, so a
    rank without a core of its own leaves every all-gather waiting for it), or more memory than
    the machine has (:func:`memory_needed`; not checked when ``work`` is None, model size
    unknown). Memory above what is available now but below the total is a warning: other
    programs may give it back, and the available figure moves by gigabytes on a shared machine.
    """
    fatal, warning = [], []
    if layout.lockstep_ranks() > machine.cores:
        fatal.append(f"{layout.lockstep_ranks()} cores (one per rank of a model)")
    if work is not None:
        need = memory_needed(layout, work)
        memory = f"about {need / GIB:.1f} GiB of memory ({work.params / 1e6:.0f}M parameters)"
        if need > machine.total_bytes:
            fatal.append(memory)
        elif need > machine.available_bytes:
            warning.append(memory)
    problems = fatal or warning
    if not problems:
        return None
    shape = (f"{layout.policy} policy, {layout.reference} reference, {layout.critic} critic, {layout.reward} reward "
             f"ranks, {layout.engines} engines")
    advice = (f"give fewer, or set {SKIP_FIT_CHECK_ENV}=1 to start anyway" if fatal
              else "starting anyway; it may run out of memory")
    return Fit(f"--actor/--ref/--critic/--reward.num_gpus_per_node, --vllm.num_engines: the layout ({shape}) "
               f"needs {' and '.join(problems)}; this machine has {machine.describe()}: {advice}", fatal=bool(fatal))


def model_size(model: str) -> tuple[int, int] | None:
    """(parameters, vocabulary) of the model ``model`` names, from its config alone (built on the
    meta device); None if transformers cannot build it (the actors then fail with the loader's cause)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(model, trust_remote_code=True)
        with torch.device("meta"):
            built = AutoModelForCausalLM.from_config(config, trust_remote_code=True)
    except (OSError, ValueError, KeyError, ImportError):
        return None
    return sum(p.numel() for p in built.parameters()), built.get_output_embeddings().out_features


def check_fit(args: SimpleNamespace, engine_cache_bytes: int = 0) -> Fit | None:
    """:func:`fit_problem` for the validated arguments of a run on this CPU (every role counted at
    the policy model's size); None when it fits, or when ``$OPENRLHF_EXT_SKIP_FIT_CHECK`` is 1."""
    if os.environ.get(SKIP_FIT_CHECK_ENV) == "1":
        return None
    size = model_size(args.actor.model_name_or_path)
    work = None
    if size is not None:
        micro_batch = max(args.train.micro_batch_size, args.rollout.micro_batch_size)
        work = Workload(params=size[0], vocab=size[1], zero_stage=args.ds.zero_stage, param_dtype=args.ds.param_dtype,
                        micro_batch_tokens=micro_batch * args.data.max_len, engine_cache_bytes=engine_cache_bytes)
    return fit_problem(Layout.of(args), work, Machine.this())
