"""Entry point of a test's spawned worker process (``torch.multiprocessing`` with ``spawn``).

A spawned process imports the test module afresh, and with it OpenRLHF's Ray modules, which import
CUDA-only packages: the ``import`` reach that conftest.py applies in the pytest process goes first.
"""

from __future__ import annotations

import importlib

from openrlhf_ext.reaches import Where, apply


def call(rank: int, target: str, *args) -> None:
    """Run ``target`` (``"module:function"``) as ``function(rank, *args)`` after the import reach."""
    apply(Where.IMPORT)
    module, _, name = target.partition(":")
    getattr(importlib.import_module(module), name)(rank, *args)
