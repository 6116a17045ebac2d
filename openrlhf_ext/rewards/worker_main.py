"""Scoring worker processes, forked from a warm template ("zygote").

``python -m openrlhf_ext.rewards.worker_main --control-fd FD --memory-mb N`` starts the zygote: it
imports math-verify and parses once (~0.5 s of CPU), says ``ready`` on the control socket, then serves
``spawn`` requests: each carries two pipe ends (SCM_RIGHTS); the zygote forks a worker that reads
requests from the first and writes replies to the second, and answers with the worker's pid. Forking
from a warm, single-threaded process makes a replacement worker cost a few milliseconds instead of a
fresh interpreter, which matters because every killed call needs one. The zygote ends when the control
socket closes (its pool closed or died) and lets the kernel reap its children (SIGCHLD ignored).

Worker protocol (the pool in :mod:`openrlhf_ext.rewards.pool` is the only client), frames of
:mod:`openrlhf_ext.rewards._ipc`: the worker first sends ``{"ready": pid}``, then answers each request
``{"response", "label", "template", "fallback", "strict", "cpu_s"}`` with the fields of a
:class:`~openrlhf_ext.rewards.verdict.Verdict` (plus ``recycle`` after a ``MemoryError``). EOF ends it.

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
import signal
import socket
import sys
from dataclasses import asdict
from typing import BinaryIO

from openrlhf_ext.rewards._ipc import PID, READY, SPAWN, encode_frame, read_frame_blocking
from openrlhf_ext.rewards.verdict import Verdict


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
    """Worker loop: answer requests until EOF."""
    from openrlhf_ext.rewards.judge import judge

    proto_out.write(encode_frame({"ready": os.getpid()}))
    proto_out.flush()
    while True:
        request = read_frame_blocking(proto_in)
        if request is None:
            return
        _limit_cpu(request["cpu_s"])
        try:
            reply = asdict(judge(request["response"], request["label"], request["template"], request["fallback"],
                                 request["strict"]))
        except Exception as exc:  # noqa: BLE001 - anything the input provokes is a wrong answer
            reply = asdict(Verdict(False, False, "none", None, f"exception:{type(exc).__name__}"))
            if isinstance(exc, MemoryError):
                reply["recycle"] = True  # the pool replaces a worker whose heap may be fragmented
        proto_out.write(encode_frame(reply))
        proto_out.flush()


def _run_worker(control: socket.socket, in_fd: int, out_fd: int) -> None:
    control.close()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    code = 0
    try:
        serve(os.fdopen(in_fd, "rb", buffering=0), os.fdopen(out_fd, "wb"))
    except BrokenPipeError:
        pass
    except BaseException:  # noqa: BLE001 - a forked child must never return into the zygote's loop
        code = 1
    finally:
        os._exit(code)


def zygote(control: socket.socket) -> None:
    """Warm up, then fork one worker per ``spawn`` request until the control socket closes."""
    from openrlhf_ext.rewards.judge import judge

    # The first parse builds math-verify's LaTeX grammar: pay it once here, so that no worker's first
    # call (and its deadline) includes it.
    judge("\\boxed{\\frac{1}{2}}", "0.5")
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    control.sendall(READY)
    while True:
        message, fds, _, _ = socket.recv_fds(control, len(SPAWN), 2)
        if message != SPAWN or len(fds) != 2:
            return  # EOF (pool gone) or a broken peer
        pid = os.fork()
        if pid == 0:
            _run_worker(control, fds[0], fds[1])
        for fd in fds:
            os.close(fd)
        control.sendall(PID.pack(pid))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--control-fd", type=int, required=True)
    parser.add_argument("--memory-mb", type=int, default=4096)
    args = parser.parse_args(argv)
    # Anything a library prints goes to stderr, never into a pipe of the protocol.
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    _limit_memory(args.memory_mb)
    control = socket.socket(fileno=args.control_fd)
    try:
        zygote(control)
    except (BrokenPipeError, ConnectionResetError, KeyboardInterrupt):
        pass


if __name__ == "__main__":
    main()
