"""Per-request sampling seeds: a rollout depends only on ``--seed``, which prompts it draws, and the weights.

Stock OpenRLHF sends every request of a rollout with one unseeded ``SamplingParams``, so vLLM
samples them all from its engine-wide generator, in whatever order the concurrent requests reach
it: two processes resumed from the same checkpoint with the same seed drew different samples. Here
every request carries its own seed (vLLM then samples it from a generator of its own, whatever else
the engine is doing):

* the controller's :class:`SeededSamplesGenerator` gives each prompt the seed
  :func:`prompt_seed` of (``--seed``, the prompt's draw: how many prompts the run had drawn
  before it, restored from the checkpoint on a resume) and puts the rollout in draw order (stock
  keeps the order in which the prompts' groups finished);
* the engine, our :class:`RolloutRayActor`, samples the ``n`` responses of a prompt as ``n``
  requests seeded :func:`sample_seeds` of the prompt's seed, so the responses of a group still differ.

Evaluation prompts are seeded by (``--seed``, the draws so far, their position in the evaluation).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import msgspec
import ray
from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator

from openrlhf_ext.reaches.patching import original

# Where create_vllm_engines finds its engine actor class (the platform's reaches wrap ours there).
ENGINE_CLASS = "openrlhf.trainer.ray.vllm_engine:RolloutRayActor"

# The response key carrying a sample's seed from the engine back to the controller.
SAMPLE_SEED = "ext_sample_seed"


def derived_seed(*parts: int | str) -> int:
    """A 63-bit seed determined by ``parts`` (a hash: neighbouring inputs give unrelated seeds)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def prompt_seed(run_seed: int, draw: int, *, evaluation: int | None = None) -> int:
    """Seed of the ``draw``-th prompt of a run (0-based, every episode counted), or of the
    ``draw``-th prompt of the evaluation made after ``evaluation`` training prompts."""
    if evaluation is None:
        return derived_seed(run_seed, "train", draw)
    return derived_seed(run_seed, "eval", evaluation, draw)


def sample_seeds(seed: int, n: int) -> list[int]:
    """Seeds of the ``n`` responses sampled for a prompt seeded ``seed``."""
    return [derived_seed(seed, k) for k in range(n)]


def seeded(sampling_params: Any, seed: int) -> Any:
    """A copy of vLLM ``SamplingParams`` with ``seed``."""
    return msgspec.structs.replace(sampling_params, seed=seed)


class RolloutRayActor(original(ENGINE_CLASS).__ray_actor_class__):
    """OpenRLHF's engine actor; a seeded request for ``n`` responses becomes ``n`` requests, each
    seeded by :func:`sample_seeds`. (The stock name: process titles and failure lines name it.)"""

    async def generate_responses(self, prompt, label, sampling_params, max_length, hf_tokenizer, num_samples=1,
                                 images=None):
        generate = super().generate_responses
        if sampling_params.seed is None:
            return await generate(prompt, label, sampling_params, max_length, hf_tokenizer, num_samples, images)
        seeds = sample_seeds(sampling_params.seed, num_samples)
        groups = await asyncio.gather(*(
            generate(prompt, label, seeded(sampling_params, seed), max_length, hf_tokenizer, 1, images)
            for seed in seeds
        ))
        return [{**response, SAMPLE_SEED: seed} for seed, (response,) in zip(seeds, groups, strict=True)]


# What create_vllm_engines instantiates in our runs (the driver reach; a platform's reaches, applied
# inside the driver reaches, may wrap it: on CPU, openrlhf_ext.cpu.rollout.cpu_engines).
SeededRolloutRayActor = ray.remote(RolloutRayActor)


class _SeedingEngine:
    """An engine handle for one dispatch: its ``generate_responses`` requests carry the next seeds of
    ``seeds`` (stock dispatches the prompts in order, one call each); the rest is the engine's."""

    def __init__(self, engine: Any, seeds: Iterator[int]) -> None:
        self._engine = engine
        self._seeds = seeds
        self.generate_responses = SimpleNamespace(remote=self._generate_responses)

    def _generate_responses(self, *, sampling_params: Any, **kwargs: Any) -> Any:
        return self._engine.generate_responses.remote(sampling_params=seeded(sampling_params, next(self._seeds)),
                                                      **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


class SeededSamplesGenerator(SamplesGenerator):
    """OpenRLHF's samples generator whose requests carry per-prompt seeds and whose rollouts are in draw order.

    ``prompts_drawn`` counts the training prompts dispatched so far; the controller sets it from the
    checkpoint when it resumes (stock's ``total_consumed_prompts`` counts the same prompts).
    """

    def __init__(self, *args: Any, seed: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.seed = seed
        self.prompts_drawn = 0
        self._evaluation: int | None = None  # the training draws before the evaluation in progress
        self._eval_drawn = 0
        self._order: dict[int, tuple[int, int]] = {}  # sample seed -> (draw, index in its group)
        # id(experience) -> its (draw, index): Experience is an unhashable dataclass; an id is set when
        # its experience is made and read while _generate_vllm's list still holds it.
        self._positions: dict[int, tuple[int, int]] = {}

    def generate_eval_samples(self, **generate_kwargs):
        self._evaluation, self._eval_drawn = self.prompts_drawn, 0
        try:
            return super().generate_eval_samples(**generate_kwargs)
        finally:
            self._evaluation = None

    def _next_draw(self) -> tuple[int, int]:
        """The next prompt's draw number and seed."""
        if self._evaluation is None:
            draw, self.prompts_drawn = self.prompts_drawn, self.prompts_drawn + 1
            return draw, prompt_seed(self.seed, draw)
        draw, self._eval_drawn = self._eval_drawn, self._eval_drawn + 1
        return draw, prompt_seed(self.seed, draw, evaluation=self._evaluation)

    def _dispatch_prompts_to_vllm(self, prompts, labels, *, images=None, **generate_kwargs):
        n = generate_kwargs.get("n_samples_per_prompt", self.args.rollout.n_samples_per_prompt)
        seeds = []
        for _ in prompts:
            draw, seed = self._next_draw()
            seeds.append(seed)
            self._order.update({s: (draw, k) for k, s in enumerate(sample_seeds(seed, n))})
        engines, next_seeds = self.vllm_engines, iter(seeds)
        self.vllm_engines = [_SeedingEngine(engine, next_seeds) for engine in engines]
        try:
            return super()._dispatch_prompts_to_vllm(prompts, labels, images=images, **generate_kwargs)
        finally:
            self.vllm_engines = engines

    def _process_response_into_experience(self, response, **generate_kwargs):
        experience = super()._process_response_into_experience(response, **generate_kwargs)
        self._positions[id(experience)] = self._order.pop(response[SAMPLE_SEED])
        return experience

    def _generate_vllm(self, dataloader_iter, num_prompts: int, dynamic_filtering, **generate_kwargs):
        try:
            experiences, consumed, exhausted = super()._generate_vllm(
                dataloader_iter, num_prompts, dynamic_filtering, **generate_kwargs
            )
            experiences.sort(key=lambda experience: self._positions[id(experience)])
        finally:
            self._order.clear()
            self._positions.clear()
        return experiences, consumed, exhausted
