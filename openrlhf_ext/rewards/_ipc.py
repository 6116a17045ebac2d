"""Framing of the scoring-worker protocol: an 8-byte big-endian length, then a pickle.

Both ends are this package (the pool and :mod:`openrlhf_ext.rewards.worker_main`), so pickle is safe.
"""

from __future__ import annotations

import pickle
import struct
from collections.abc import Callable
from typing import Any, BinaryIO

HEADER = struct.Struct(">Q")
# Control messages between the pool and the worker template process (zygote).
SPAWN = b"spawn"
READY = b"ready"
PID = struct.Struct(">q")


def encode_frame(obj: Any) -> bytes:
    """One protocol frame for ``obj``."""
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(body)) + body


def _read_exact_blocking(stream: BinaryIO, n: int) -> bytes | None:
    chunks = []
    while n:
        chunk = stream.read(n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_frame(read_exact: Callable[[int], bytes | None]) -> Any | None:
    """The next frame's object read with ``read_exact(n)`` (exactly ``n`` bytes, or ``None`` at end of stream)."""
    header = read_exact(HEADER.size)
    if header is None:
        return None
    body = read_exact(HEADER.unpack(header)[0])
    return None if body is None else pickle.loads(body)


def read_frame_blocking(stream: BinaryIO) -> Any | None:
    """The next frame's object, or ``None`` at end of stream."""
    return read_frame(lambda n: _read_exact_blocking(stream, n))
