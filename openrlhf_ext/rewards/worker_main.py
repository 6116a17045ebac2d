"""Scoring worker process: ``python -m openrlhf_ext.rewards.worker_main --memory-mb N``.

Protocol on stdin/stdout (the pool in :mod:`openrlhf_ext.rewards.pool` is the only client): frames of
:mod:`openrlhf_ext.rewards._ipc`. The worker first sends ``{"ready": pid}``, then answers
each request ``{"response", "label", "template", "fallback", "cpu_s"}`` with the fields of a
:class:`~openrlhf_ext.rewards.verdict.Verdict` (plus ``recycle`` after a ``MemoryError``). EOF on stdin
ends the worker.

Guards that hold even if the parent dies while a computation is stuck in C code (where no Python
thread or signal handler can run): an address-space limit (a runaway bignum raises ``MemoryError``
instead of eating the node's memory) and, per request, a CPU-time limit of ``cpu_s`` seconds on top of
the time already used (the kernel's SIGXCPU then ends the process). The parent's wall-clock deadline
is far shorter than ``cpu_s``, so in normal operation the parent kills a stuck worker first.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from dataclasses import asdict
from typing import BinaryIO

from openrlhf_ext.rewards._ipc import encode_frame, read_frame_blocking


def _limit_cpu(extra_seconds: float) -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(usage.ru_utime + usage.ru_stime + extra_seconds) + 1
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _limit_memory(megabytes: int) -> None:
    if megabytes <= 0:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    soft = megabytes * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def serve(proto_in: BinaryIO, proto_out: BinaryIO) -> None:
    """Answer requests until EOF."""
    from openrlhf_ext.rewards.judge import judge

    # The first parse builds math-verify's LaTeX grammar (~0.1 s): pay it before saying "ready" so
    # the parent's per-call deadline never includes it.
    judge("\\boxed{1}", "1")
    proto_out.write(encode_frame({"ready": os.getpid(), "t": time.time()}))
    proto_out.flush()
    while True:
        request = read_frame_blocking(proto_in)
        if request is None:
            return
        _limit_cpu(request["cpu_s"])
        try:
            reply = asdict(judge(request["response"], request["label"], request["template"], request["fallback"]))
        except MemoryError:
            reply = {"correct": False, "format_ok": False, "method": "none", "answer": None}
            reply.update(error="exception:MemoryError", recycle=True)
        except Exception as exc:  # noqa: BLE001 - anything the input provokes is a wrong answer
            reply = {"correct": False, "format_ok": False, "method": "none", "answer": None}
            reply["error"] = f"exception:{type(exc).__name__}"
        proto_out.write(encode_frame(reply))
        proto_out.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--memory-mb", type=int, default=4096)
    args = parser.parse_args(argv)
    # Keep the protocol stream private: anything a library prints goes to stderr instead.
    proto_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    proto_in = os.fdopen(os.dup(sys.stdin.fileno()), "rb", buffering=0)
    _limit_memory(args.memory_mb)
    try:
        serve(proto_in, proto_out)
    except (BrokenPipeError, KeyboardInterrupt):
        pass


if __name__ == "__main__":
    main()
