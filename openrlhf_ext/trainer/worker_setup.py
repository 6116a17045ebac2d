"""Runs first in every Ray worker process (Ray's ``worker_process_setup_hook``)."""

from __future__ import annotations


def setup_worker() -> None:
    # Importing the package installs the stand-ins for GPU-only modules before any OpenRLHF import.
    import openrlhf_ext  # noqa: F401
