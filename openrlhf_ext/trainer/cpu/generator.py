"""The CPU rollout generator: OpenRLHF's rollout actor interface on transformers' ``generate``.

OpenRLHF 0.11.2 generates only through vLLM engines: ``SamplesGenerator`` calls
``engine.generate_responses.remote(...)`` and ``engine.get_num_unfinished_requests.remote()``; the
stock agent executors (``openrlhf.utils.agent``, which also call the ``--reward.remote_url``
reward function) call back ``engine.generate(prompt_token_ids, sampling_params)`` and read
``.outputs[0].token_ids / .text / .finish_reason / .logprobs``; the policy actor drives
``init_process_group`` + ``update_weight`` for the weight sync, and the trainer may call
``sleep / wake_up / reset_prefix_cache / pause_generation / resume_generation``.

:class:`CpuRolloutActor` subclasses the stock ``RolloutRayActor`` (so ``generate_responses`` and
the executor are OpenRLHF's own) and replaces only the engine:

* requests that arrive together (all ``n_samples_per_prompt`` samples of all prompts of a rollout
  batch are dispatched at once) are micro-batched into one left-padded ``model.generate`` call per
  set of identical sampling settings, run in a worker thread so the actor keeps accepting requests;
* temperature / top_p / top_k / max_tokens / min_tokens follow vLLM's meaning (temperature 0 is
  greedy, top_k <= 0 is off); every request gets its own token budget;
* per-token log-probs, only when asked for (``--algo.advantage.is_correction_level``), come from a
  teacher-forced forward pass over the finished sequences: ``log_softmax(logits / T)`` for
  ``processed_logprobs`` (the quantity the trainer computes) or ``T = 1`` otherwise. Unlike vLLM,
  top-p / top-k truncation is not folded into them;
* weights arrive through :mod:`~openrlhf_ext.trainer.cpu.weight_sync` (gloo) and are copied into the
  model parameters of the same name.

Sleep / wake-up and prefix caching have no CPU counterpart and are accepted as no-ops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import ray
import torch
import torch.nn.functional as F
from openrlhf.trainer.ray.vllm_engine import RolloutRayActor, _load_agent_executor
from openrlhf.utils.agent import SingleTurnAgentExecutor

from openrlhf_ext.trainer.cpu.weight_sync import GlooBroadcastGroup, copy_into_parameter

# Seconds without a new request before a batch is closed; requests of one rollout batch arrive
# within a few milliseconds of each other.
BATCH_WINDOW_S = 0.05
MAX_BATCH_SIZE = 64


@dataclass
class Logprob:
    """What the agent executors read from vLLM's per-token logprob entries."""

    logprob: float


@dataclass
class CompletionOutput:
    token_ids: list[int]
    text: str
    finish_reason: str  # "stop" (ended with EOS) or "length" (hit its token budget)
    logprobs: list[dict[int, Logprob]] | None = None


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into ``(input_ids, attention_mask)``, both ``(B, max_len)`` int64."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
        attention_mask[row, width - len(prompt) :] = 1
    return input_ids, attention_mask


def cut_completion(generated: Sequence[int], eos_ids: set[int], budget: int) -> tuple[list[int], str]:
    """Tokens of one completion as vLLM reports them: up to and including the first EOS
    (finish ``"stop"``), or the first ``budget`` tokens (finish ``"length"``)."""
    if budget < 1:
        raise ValueError(f"token budget must be >= 1, got {budget}")
    for i, token in enumerate(generated[:budget]):
        if token in eos_ids:
            return list(generated[: i + 1]), "stop"
    return list(generated[:budget]), "length"


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float) -> torch.Tensor:
    """``log softmax(logits / temperature)`` at ``tokens``: ``(..., V), (...) -> (...)`` float32.

    ``logits[..., t, :]`` must be the prediction for ``tokens[..., t]``.
    """
    if temperature <= 0:
        temperature = 1.0  # greedy decoding: report the unscaled distribution
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def sampling_key(params: Any) -> tuple:
    """Requests sharing this key can run in one ``generate`` call (budgets may differ)."""
    return (
        float(params.temperature),
        float(params.top_p),
        int(params.top_k),
        int(params.min_tokens or 0),
        params.logprobs is not None,
    )


@dataclass
class _Request:
    prompt: list[int]
    params: Any
    future: asyncio.Future


class CpuRolloutActor(RolloutRayActor.__ray_actor_class__):
    """Drop-in for OpenRLHF's vLLM rollout actor, generating with transformers on CPU."""

    def __init__(
        self,
        model: str,
        seed: int = 0,
        agent_func_path: str | None = None,
        remote_rm_url: str | list[str] | None = None,
        logprobs_mode: str | None = None,
        dtype: torch.dtype = torch.bfloat16,
        max_batch_size: int = MAX_BATCH_SIZE,
    ) -> None:
        # The stock __init__ builds a vLLM engine; we keep its executor choice and nothing else.
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.executor = _load_agent_executor(agent_func_path) if agent_func_path else SingleTurnAgentExecutor(remote_rm_url)
        torch.manual_seed(seed)
        self.model = AutoModelForCausalLM.from_pretrained(model, dtype=dtype, attn_implementation="sdpa")
        self.model.eval()
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self._params = dict(self.model.named_parameters())
        eos = self.model.generation_config.eos_token_id
        self._eos_ids = set(eos if isinstance(eos, list) else [eos])
        self._pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(self._eos_ids)
        self._temperature_in_logprobs = logprobs_mode == "processed_logprobs"
        self._max_batch_size = max_batch_size
        self._queue: list[_Request] = []
        self._in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._model_lock: asyncio.Lock | None = None
        self._sync_group: GlooBroadcastGroup | None = None

    # ---- generation -------------------------------------------------------------------------

    async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None) -> RequestOutput:
        if multi_modal_data:
            raise NotImplementedError("the CPU generator is text-only (no multi-modal inputs)")
        if not sampling_params.max_tokens or sampling_params.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {sampling_params.max_tokens}")
        self._ensure_server()
        future = asyncio.get_running_loop().create_future()
        self._queue.append(_Request(list(prompt_token_ids), sampling_params, future))
        self._wake.set()
        return await future

    async def get_num_unfinished_requests(self) -> int:
        return len(self._queue) + self._in_flight

    def _ensure_server(self) -> None:
        # One batching task per event loop: Ray keeps one loop per actor, but the class is also
        # driven directly (tests, scripts) where every asyncio.run brings a new loop.
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._loop = loop
            self._wake = asyncio.Event()
            self._model_lock = asyncio.Lock()
            loop.create_task(self._serve())

    async def _serve(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:  # let the rest of a rollout batch arrive
                seen = len(self._queue)
                await asyncio.sleep(BATCH_WINDOW_S)
                if len(self._queue) in (seen, 0) or len(self._queue) >= self._max_batch_size:
                    break
            while self._queue:
                key = sampling_key(self._queue[0].params)
                batch = [r for r in self._queue if sampling_key(r.params) == key][: self._max_batch_size]
                taken = {id(r) for r in batch}
                self._queue = [r for r in self._queue if id(r) not in taken]
                self._in_flight = len(batch)
                try:
                    async with self._model_lock:
                        outputs = await asyncio.to_thread(self._run_batch, batch)
                except Exception as err:  # noqa: BLE001  (handed to every waiting caller)
                    for request in batch:
                        request.future.set_exception(err)
                else:
                    for request, output in zip(batch, outputs, strict=True):
                        request.future.set_result(output)
                finally:
                    self._in_flight = 0

    @torch.inference_mode()
    def _run_batch(self, batch: list[_Request]) -> list[RequestOutput]:
        from transformers import GenerationConfig

        params = batch[0].params
        budgets = [int(r.params.max_tokens) for r in batch]
        input_ids, attention_mask = left_pad([r.prompt for r in batch], self._pad_id)
        greedy = params.temperature <= 0
        config = GenerationConfig(
            do_sample=not greedy,
            temperature=None if greedy else float(params.temperature),
            top_p=None if greedy else float(params.top_p),
            top_k=None if greedy or params.top_k <= 0 else int(params.top_k),
            max_new_tokens=max(budgets),
            min_new_tokens=int(params.min_tokens or 0) or None,
            eos_token_id=sorted(self._eos_ids),
            pad_token_id=self._pad_id,
        )
        sequences = self.model.generate(input_ids=input_ids, attention_mask=attention_mask, generation_config=config)
        generated = sequences[:, input_ids.shape[1] :].tolist()
        cuts = [cut_completion(row, self._eos_ids, budget) for row, budget in zip(generated, budgets, strict=True)]
        logprobs = self._completion_logprobs(batch, cuts, params.temperature) if params.logprobs is not None else None
        outputs = []
        for i, (request, (tokens, reason)) in enumerate(zip(batch, cuts, strict=True)):
            text_tokens = tokens[:-1] if reason == "stop" else tokens  # vLLM leaves the EOS out of the text
            text = self.tokenizer.decode(text_tokens, skip_special_tokens=bool(request.params.skip_special_tokens))
            entries = None if logprobs is None else [{t: Logprob(lp)} for t, lp in zip(tokens, logprobs[i], strict=True)]
            outputs.append(RequestOutput(request.prompt, [CompletionOutput(tokens, text, reason, entries)]))
        return outputs

    def _completion_logprobs(
        self, batch: list[_Request], cuts: list[tuple[list[int], str]], temperature: float
    ) -> list[list[float]]:
        """Teacher-forced log-probs of each completion (right padding keeps positions 0..n-1)."""
        rows = [r.prompt + tokens for r, (tokens, _) in zip(batch, cuts, strict=True)]
        width = max(len(row) for row in rows)
        ids = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
            mask[i, : len(row)] = 1
        logits = self.model(input_ids=ids, attention_mask=mask).logits
        scale = float(temperature) if self._temperature_in_logprobs else 1.0
        result = []
        for i, (request, (tokens, _)) in enumerate(zip(batch, cuts, strict=True)):
            start = len(request.prompt)
            span = logits[i, start - 1 : start - 1 + len(tokens)]
            result.append(token_logprobs(span, torch.tensor(tokens), scale).tolist())
        return result

    # ---- weight sync ------------------------------------------------------------------------

    async def init_process_group(
        self, master_address, master_port, rank_offset, world_size, group_name, backend, use_ray
    ) -> None:
        if use_ray:
            raise NotImplementedError(
                "--vllm.sync_with_ray is not supported by the CPU generator: Ray's gloo collective joins the "
                "default torch.distributed group, which DeepSpeed owns in the policy process"
            )
        self._sync_group = await asyncio.to_thread(
            GlooBroadcastGroup, master_address, master_port, rank_offset, world_size
        )

    async def update_weight(self, name, dtype, shape, empty_cache=False) -> None:
        if self._sync_group is None:
            raise RuntimeError("update_weight before init_process_group")
        self._ensure_server()
        async with self._model_lock:
            await asyncio.to_thread(self._receive_weight, name, dtype, tuple(shape))

    def _receive_weight(self, name: str, dtype: torch.dtype, shape: tuple[int, ...]) -> None:
        buffer = torch.empty(shape, dtype=dtype)
        self._sync_group.broadcast(buffer, src=0)
        copy_into_parameter(self._params, name, buffer)

    async def update_weight_cuda_ipc(self, *args, **kwargs) -> None:
        raise NotImplementedError("CUDA IPC weight sync needs GPUs; on CPU the sync backend is gloo")

    async def get_state_dict(self) -> dict[str, torch.Tensor]:
        """A copy of the generator's parameters (for checking the weight sync)."""
        return {name: p.detach().clone() for name, p in self._params.items()}

    # ---- vLLM engine controls without a CPU counterpart -------------------------------------

    async def reset_prefix_cache(self) -> None:
        return None

    async def pause_generation(self) -> None:
        return None

    async def resume_generation(self) -> None:
        return None

    async def sleep(self, level=1) -> None:
        return None

    async def wake_up(self, tags=None) -> None:
        return None


CpuRolloutRayActor = ray.remote(CpuRolloutActor)
