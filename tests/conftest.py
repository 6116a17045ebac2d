"""Shared test fixtures.

GPU-only modules: the ``import`` reach of ``openrlhf_ext.reaches`` registers stand-ins for
``flash_attn_2_cuda`` (the CUDA kernels of flash-attn) and ``vllm`` when they are not installed.
The code under test never calls into them on CPU; they exist only so that OpenRLHF's Ray modules
import. Applying it here installs them once for the whole test session, as importing any layer
that wraps OpenRLHF does; this is the only place tests rely on stubs.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import signal
import sys
from collections.abc import Iterator

import pytest
from helpers import MATH_DATA, read_problems, write_hub_dataset

from openrlhf_ext.data import BENCHMARKS
from openrlhf_ext.reaches import REACHES, Where, apply
from openrlhf_ext.reaches.patching import is_patched, original

apply(Where.IMPORT)  # see the module docstring


def _unpatch(target: str) -> None:
    """Put back in ``target`` what it held before our first patch of it."""
    module, _, path = target.partition(":")
    *outer, attr = path.split(".")
    setattr(functools.reduce(getattr, outer, sys.modules[module]), attr, original(target))


@pytest.fixture(autouse=True)
def isolated_process_state() -> Iterator[None]:
    """What a test changes in this process is undone after it, so that no test runs in another's
    leftovers: the environment (every subprocess inherits it; ray.init sets variables, a launch adds
    the workers'), the SIGINT / SIGTERM handlers (the run guard's, Ray's sys.exit) and the reaches
    applied for good (importing the vLLM engine's module patches vLLM)."""
    environ = dict(os.environ)
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    patched = {reach.target for reach in REACHES if is_patched(reach.target)}
    yield
    for reach in REACHES:
        if reach.target not in patched and is_patched(reach.target):
            _unpatch(reach.target)
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
    if os.environ != environ:
        os.environ.clear()
        os.environ.update(environ)


@pytest.fixture(autouse=True)
def own_ray_instance(request, monkeypatch):
    """A bare ray.init() attaches to any Ray instance it finds on the machine (another test's, a
    developer's): the training runs of slow tests, and their subprocesses, start their own."""
    if request.node.get_closest_marker("slow"):
        monkeypatch.setenv("RAY_ADDRESS", "local")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> str:
    """A 2-layer randomly initialised SmolLM2-architecture model with the real SmolLM2 tokenizer.

    Building it converts the embedded GGUF model once (cached under ~/.cache/openrlhf_ext).
    """
    from openrlhf_ext.models.embedded import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny_model"))


@pytest.fixture(scope="session")
def local_ray():
    """One local Ray instance (CPU only, loopback) for the whole session, set up as launch() does."""
    import ray

    from openrlhf_ext.cpu.worker import ray_runtime_env

    if not ray.is_initialized():
        # log_to_driver off: Ray streams its workers' output to this process's stderr whenever it arrives,
        # i.e. into the captured output of whichever test runs then (a later test counting its error lines).
        ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, runtime_env=ray_runtime_env({}),
                 _node_ip_address="127.0.0.1", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def prompts_file() -> str:
    """Eight GSM8K-style problems as a prompt JSONL (`problem` / `answer` keys)."""
    return str(MATH_DATA / "gsm8k_style.jsonl")


@pytest.fixture
def hub_benchmarks(tmp_path, monkeypatch) -> dict[str, list[dict[str, str]]]:
    """Every row of the benchmark registry pointed at a local copy of its Hugging Face dataset (tests
    reach no network), laid out and shaped as on the Hub: Dr. GRPO's suite (one split per benchmark,
    answers in lists, two of them in one OlympiadBench list) and GSM8K (config ``main``, answers after
    ``####`` with thousands separators). Returns the problems each name must load."""
    math, gsm8k = read_problems("math_style"), read_problems("gsm8k_style")
    expected = {"math500": math[:4], "aime24": gsm8k[:2], "amc23": math[4:6], "minerva_math": math[13:15],
                "olympiadbench": math[11:13], "gsm8k": gsm8k[2:5], "gsm8k_train": gsm8k}
    suite = {BENCHMARKS[name].split: [{"problem": p["problem"],
                                        "answer": p["answer"].split(", ") if name == "olympiadbench" else [p["answer"]]}
                                       for p in problems]
             for name, problems in expected.items() if BENCHMARKS[name].dataset == "lkevinzc/math-eval"}
    assert [len(row["answer"]) for row in suite["olympiad_bench"]] == [1, 2]  # "-3, 3": several answers
    gsm8k_splits = {BENCHMARKS[name].split: [{"question": p["problem"], "answer": f"Adding up.\n#### {int(p['answer']):,}"}
                                             for p in problems] for name, problems in expected.items()
                    if BENCHMARKS[name].dataset == "openai/gsm8k"}
    copies = {"lkevinzc/math-eval": write_hub_dataset(tmp_path / "math-eval", suite),
              "openai/gsm8k": write_hub_dataset(tmp_path / "gsm8k", gsm8k_splits, config="main")}
    for name, benchmark in BENCHMARKS.items():
        monkeypatch.setitem(BENCHMARKS, name, dataclasses.replace(benchmark, dataset=copies[benchmark.dataset]))
    return expected
