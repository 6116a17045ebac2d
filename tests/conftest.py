"""Shared test fixtures.

GPU-only modules: the ``import`` reach of ``openrlhf_ext.reaches`` registers stand-ins for
``flash_attn_2_cuda`` (the CUDA kernels of flash-attn) and ``vllm`` when they are not installed.
The code under test never calls into them on CPU; they exist only so that OpenRLHF's Ray modules
import. Applying it here installs them once for the whole test session, as importing any layer
that wraps OpenRLHF does; this is the only place tests rely on stubs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import REPO_ROOT

from openrlhf_ext.reaches import Where, apply

apply(Where.IMPORT)  # see the module docstring

SHARED_DATA = Path(os.environ.get("OPENRLHF_EXT_SHARED_DATA", REPO_ROOT.parent / "shared" / "data" / "math"))


@pytest.fixture(scope="session")
def shared_math_dir() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared math data not found at {SHARED_DATA}")
    return SHARED_DATA


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
        ray.init(address="local", num_cpus=2, num_gpus=0, include_dashboard=False, runtime_env=ray_runtime_env({}),
                 _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


@pytest.fixture
def prompts_file(tmp_path, shared_math_dir) -> str:
    """Eight GSM8K problems as a prompt JSONL (`problem` / `answer` keys)."""
    lines = (shared_math_dir / "gsm8k_train.jsonl").read_text().splitlines()[:8]
    path = tmp_path / "prompts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)
