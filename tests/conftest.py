"""Shared test fixtures.

GPU-only modules: ``openrlhf_ext.platform.install_import_shims`` registers stand-ins for
``flash_attn_2_cuda`` (the CUDA kernels of flash-attn) and ``vllm`` when they are not installed.
The code under test never calls into them on CPU; they exist only so that OpenRLHF's Ray modules
import. Importing ``openrlhf_ext`` here installs them once for the whole test session; this is the
only place tests rely on stubs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import openrlhf_ext  # noqa: F401  (installs the import shims, see module docstring)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("OPENRLHF_EXT_SHARED_DATA", REPO_ROOT.parent / "shared" / "data" / "math"))


@pytest.fixture(scope="session")
def shared_math_dir() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared math data not found at {SHARED_DATA}")
    return SHARED_DATA
