"""Per-request sampling seeds (openrlhf_ext.trainer.rollout_seeds): what seeds a rollout draws, and in which order.

The controller's generator and the engine actor's ``generate_responses`` run for real; the vLLM engine
behind them is a stand-in that answers a request with its seed, and Ray is a stand-in that hands
the results back last-dispatched-first (the order stock code keeps when later prompts finish first).
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import openrlhf.trainer.ppo_utils.samples_generator as stock_generator
import pytest
from vllm import SamplingParams

from openrlhf_ext.cpu.rollout import ENGINE_DTYPE, CpuRolloutActorClass
from openrlhf_ext.reaches.patching import original, patched
from openrlhf_ext.trainer.rollout_seeds import (
    ENGINE_CLASS,
    SAMPLE_SEED,
    RolloutRayActor,
    SeededRolloutRayActor,
    SeededSamplesGenerator,
    derived_seed,
    prompt_seed,
    sample_seeds,
)


def test_seeds_differ_by_run_seed_draw_and_sample_and_fit_in_63_bits():
    seeds = {prompt_seed(run, draw) for run in (0, 1, 42) for draw in range(100)}
    assert len(seeds) == 300 and all(0 <= s < 2**63 for s in seeds)
    assert prompt_seed(42, 7) == prompt_seed(42, 7) == derived_seed(42, "train", 7)
    group = sample_seeds(prompt_seed(42, 7), 16)
    assert len(set(group)) == 16 and sample_seeds(prompt_seed(42, 7), 4) == group[:4]
    assert prompt_seed(42, 7, evaluation=0) != prompt_seed(42, 7) != prompt_seed(42, 7, evaluation=8)
    assert sample_seeds(prompt_seed(43, 7), 4) != sample_seeds(prompt_seed(42, 7), 4)


class EchoExecutor:
    """Answers like OpenRLHF's single-turn executor: the response's one action token is its seed."""

    def __init__(self) -> None:
        self.seeds = []

    async def execute(self, prompt, label, sampling_params, max_length, hf_tokenizer, llm_engine, images=None):
        self.seeds.append(sampling_params.seed)
        await asyncio.sleep(0)  # let the other samples of the group start: they run concurrently
        return {"prompt": prompt, "label": label, "observation_tokens": [1, 2, (sampling_params.seed or 0) % 1000],
                "action_ranges": [(2, 3)], "rollout_log_probs": None, "reward": 1.0, "scores": 1.0,
                "truncated": False, "extra_logs": {}}


def engine() -> RolloutRayActor:
    actor = object.__new__(RolloutRayActor)  # no vLLM behind it: generate_responses only needs the executor
    actor.executor = EchoExecutor()
    return actor


def test_the_engine_samples_a_seeded_group_as_requests_seeded_apart():
    actor = engine()
    params = SamplingParams(temperature=1.0, max_tokens=4, seed=1234)
    responses = asyncio.run(actor.generate_responses("p", "l", params, 100, None, num_samples=4))
    assert actor.executor.seeds == sample_seeds(1234, 4)
    assert [r[SAMPLE_SEED] for r in responses] == sample_seeds(1234, 4)
    assert [r["prompt"] for r in responses] == ["p"] * 4 and params.seed == 1234

    stock = asyncio.run(actor.generate_responses("p", "l", SamplingParams(max_tokens=4), 100, None, num_samples=3))
    assert actor.executor.seeds[4:] == [None] * 3 and all(SAMPLE_SEED not in r for r in stock)


class EngineHandle:
    """A Ray handle's shape around a real engine actor: ``.remote`` runs the method at once."""

    def __init__(self) -> None:
        self.actor = engine()
        self.generate_responses = SimpleNamespace(
            remote=lambda **kw: asyncio.run(self.actor.generate_responses(**kw)))
        self.get_num_unfinished_requests = SimpleNamespace(remote=lambda: 0)


class LastFirstRay:
    """Ray's get/wait for plain values; wait hands back the last pending result first."""

    get = staticmethod(lambda value: value)
    wait = staticmethod(lambda refs, num_returns, timeout: (refs[-1:], refs[:-1]))


def args(n: int) -> SimpleNamespace:
    return SimpleNamespace(
        rollout=SimpleNamespace(n_samples_per_prompt=n, batch_size=2, vllm_generate_batch_size=None),
        algo=SimpleNamespace(dynamic_filtering_enable=False, advantage=SimpleNamespace(is_correction_level="off")),
        vllm=SimpleNamespace(enable_sleep=False),
    )


def generator(seed: int, prompts: list[str], n: int = 3) -> SeededSamplesGenerator:
    batches = [(["src"], [prompt], [f"label-{prompt}"], [None]) for prompt in prompts]
    return SeededSamplesGenerator(SimpleNamespace(args=args(n)), batches, batches, tokenizer=None,
                                  vllm_engines=[EngineHandle(), EngineHandle()], seed=seed)


def rollout(gen: SeededSamplesGenerator) -> list[tuple[str, int]]:
    samples = gen.generate_samples(max_new_tokens=4, max_len=100)[0]
    return [(s.prompts[0], s.sequences[0, -1].item()) for s in samples]


def expected(seed: int, draws: range, prompts: list[str], n: int = 3) -> list[tuple[str, int]]:
    return [(prompts[d], s % 1000) for d in draws for s in sample_seeds(prompt_seed(seed, d), n)]


@pytest.fixture
def last_first_ray(monkeypatch):
    monkeypatch.setattr(stock_generator, "ray", LastFirstRay)


PROMPTS = ["a", "b", "c", "d"]


def test_rollouts_are_in_draw_order_seeded_by_draw_and_a_resumed_generator_continues(last_first_ray):
    gen = generator(42, PROMPTS)
    first, second = rollout(gen), rollout(gen)
    assert first == expected(42, range(0, 2), PROMPTS) and second == expected(42, range(2, 4), PROMPTS)
    assert gen.prompts_drawn == 4
    assert sum(e.actor.executor.seeds != [] for e in gen.vllm_engines) == 2  # stock still spreads the prompts

    resumed = generator(42, PROMPTS[2:])
    resumed.prompts_drawn = 2  # the controller sets it from the checkpoint
    assert rollout(resumed) == second
    assert rollout(generator(7, PROMPTS)) != first  # another --seed draws other samples


def test_evaluation_has_its_own_seeds_and_leaves_the_training_draws_alone(last_first_ray):
    gen = generator(42, PROMPTS)
    rollout(gen)
    evaluation = gen.generate_eval_samples(max_new_tokens=4, max_len=100, n_samples_per_prompt=2)
    seeds = [s.sequences[0, -1].item() for s in evaluation]
    assert seeds == [s % 1000 for d in range(4) for s in sample_seeds(prompt_seed(42, d, evaluation=2), 2)]
    assert gen.prompts_drawn == 2 and rollout(gen) == expected(42, range(2, 4), PROMPTS)


def test_engines_are_ours_on_every_platform():
    """The driver reach puts our engine actor in place; the CPU platform's, applied inside it, wraps it."""
    from openrlhf_ext.reaches import Where, scoped

    with scoped(Where.DRIVER):
        assert original(ENGINE_CLASS) is not SeededRolloutRayActor
        import openrlhf.trainer.ray.vllm_engine as stock

        assert stock.RolloutRayActor is SeededRolloutRayActor
        token = ENGINE_DTYPE.set("float32")
        try:
            with scoped(Where.CPU_DRIVER):
                on_cpu = stock.RolloutRayActor
        finally:
            ENGINE_DTYPE.reset(token)
    assert isinstance(on_cpu, CpuRolloutActorClass) and on_cpu.actor_class is SeededRolloutRayActor
    assert on_cpu.dtype == "float32"


def test_the_engine_subclasses_the_stock_actor_also_behind_the_cpu_stand_in():
    import openrlhf.trainer.ray.vllm_engine as stock

    assert RolloutRayActor.__mro__[1] is original(ENGINE_CLASS).__ray_actor_class__
    with patched(ENGINE_CLASS, lambda current: CpuRolloutActorClass(current, "float32")):
        assert isinstance(stock.RolloutRayActor, CpuRolloutActorClass) and original(ENGINE_CLASS).__ray_actor_class__ is \
            RolloutRayActor.__mro__[1]
