"""Rendezvous ports outside the kernel's ephemeral range.

OpenRLHF picks the port of a process group's rendezvous store (``MASTER_PORT`` in
``BaseDistributedActor._get_free_port``; the policy -> vLLM weight-sync group in
``PolicyModelActor._init_vllm_sync_group``) by binding port 0, reading the port and closing the
socket; the ``TCPStore`` binds it again only when the actors initialise their models, tens of
seconds later. Port 0 draws from the kernel's ephemeral range
(``/proc/sys/net/ipv4/ip_local_port_range``, 32768-60999 by default), which every other port-0 bind
(gloo's listening sockets of the groups initialising meanwhile, vLLM, the other actors' own choice)
and every outbound connection draws from too (Linux 6.18 gives port-0 binds odd ports and
connections even ones; other kernels mix them): in between, one of them can take the port and the
store fails with ``EADDRINUSE`` ("The server socket has failed to listen on any local network
address"). Measured on Linux 6.18: of 2000 port-0 binds, 59 drew one of 400 ports drawn before.

:class:`RendezvousSocket` binds port 0 to a random free port between Ray's worker ports and the
ephemeral range instead, where only explicit binds land, so the port can be lost only to another
rendezvous choosing the same one (one in several thousand). Ports above the ephemeral range are
not used: Ray picks its own ports there at random. The ``worker`` rows of
:data:`openrlhf_ext.reaches.REACHES` give the two OpenRLHF modules this ``socket``;
:func:`vllm_port_env` gives vLLM's engines the same choice through its own ``VLLM_PORT``.
"""

from __future__ import annotations

import errno
import os
import random
import socket
import types
from pathlib import Path
from typing import Any

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Ray's default --max-worker-port: its workers listen on 10002-19999.
RAY_MAX_WORKER_PORT = 19999
# Free-port attempts in the rendezvous range before falling back to the kernel's choice.
ATTEMPTS = 32
# vLLM scans upward from VLLM_PORT for each port it needs: keep that scan below the ephemeral range.
VLLM_PORT_SPAN = 100

# Every OpenRLHF actor seeds Python's global `random` with --seed, so all of them would draw the
# same "random" ports from it: draw from the OS instead.
_rng = random.SystemRandom()


def ephemeral_port_range(path: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int] | None:
    """The kernel's ephemeral port range (low, high), or None where it cannot be read (not Linux)."""
    try:
        low, high = (int(field) for field in path.read_text().split())
    except (OSError, ValueError):
        return None
    return low, high


def rendezvous_ports(ephemeral: tuple[int, int] | None, floor: int = RAY_MAX_WORKER_PORT + 1) -> range:
    """Ports from ``floor`` up to the ephemeral range's lower bound; empty when there is no such gap
    (or the ephemeral range is unknown), which means: let the kernel choose."""
    if ephemeral is None:
        return range(0)
    return range(floor, max(floor, ephemeral[0]))


def candidate_ports(ports: range, rng: random.Random = _rng, attempts: int = ATTEMPTS) -> list[int]:
    """Up to ``attempts`` distinct ports of ``ports`` in random order."""
    return rng.sample(ports, min(attempts, len(ports)))


class RendezvousSocket(socket.socket):
    """A socket whose bind to port 0 takes a free port of :func:`rendezvous_ports` (the kernel's
    choice when none is free or the range is empty); every other bind is the stock one."""

    def bind(self, address: Any) -> None:
        if self.family not in (socket.AF_INET, socket.AF_INET6) or address[1] != 0:
            return super().bind(address)
        for port in candidate_ports(rendezvous_ports(ephemeral_port_range())):
            try:
                return super().bind((address[0], port, *address[2:]))
            except OSError as err:
                if err.errno not in (errno.EADDRINUSE, errno.EACCES):
                    raise
        return super().bind(address)


class _SocketModule(types.ModuleType):
    """The ``socket`` module, with :class:`RendezvousSocket` as its ``socket``."""

    socket = RendezvousSocket

    def __getattr__(self, name: str) -> Any:
        return getattr(socket, name)


socket_module = _SocketModule("socket", "the socket module, binding port 0 to a rendezvous port")


def vllm_port_env(environ: dict[str, str] | os._Environ = os.environ) -> dict[str, str]:
    """``VLLM_PORT`` for a process that may start vLLM engines: a random base in the rendezvous range.

    vLLM's ``get_open_port`` (the rendezvous of an engine's own workers) also binds port 0 and
    closes; with ``VLLM_PORT`` it scans upward from that port instead. An engine's EngineCore
    process inherits its actor's environment but sees none of the actor's patches, so this is the
    way in; drawn per process, so that two engines rarely scan from the same base. Empty when the
    user set ``VLLM_PORT`` or the range is too small.
    """
    ports = rendezvous_ports(ephemeral_port_range())
    if "VLLM_PORT" in environ or len(ports) <= VLLM_PORT_SPAN:
        return {}
    return {"VLLM_PORT": str(_rng.randrange(ports.start, ports.stop - VLLM_PORT_SPAN))}
