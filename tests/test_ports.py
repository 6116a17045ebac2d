"""Rendezvous ports (openrlhf_ext.reaches.ports): outside the kernel's ephemeral range, free, or the kernel's choice."""

from __future__ import annotations

import random
import socket
import subprocess
import sys

import pytest

from openrlhf_ext.reaches import ports
from openrlhf_ext.reaches.ports import (
    RendezvousSocket,
    candidate_ports,
    ephemeral_port_range,
    rendezvous_ports,
    socket_module,
    vllm_port_env,
)


def test_the_range_lies_between_rays_worker_ports_and_the_ephemeral_range(tmp_path):
    proc = tmp_path / "ip_local_port_range"
    proc.write_text("32768\t60999\n")
    assert ephemeral_port_range(proc) == (32768, 60999)
    assert rendezvous_ports((32768, 60999)) == range(20000, 32768)
    assert rendezvous_ports((40000, 60999), floor=30000) == range(30000, 40000)


def test_no_gap_or_no_proc_file_means_the_kernels_choice(tmp_path):
    assert ephemeral_port_range(tmp_path / "missing") is None
    (tmp_path / "garbled").write_text("32768")
    assert ephemeral_port_range(tmp_path / "garbled") is None
    assert len(rendezvous_ports(None)) == 0
    assert len(rendezvous_ports((1024, 65535))) == 0  # an ephemeral range starting below Ray's worker ports
    assert candidate_ports(range(0)) == []


def test_candidates_are_distinct_random_ports_of_the_range():
    ports_ = range(20000, 32768)
    first, second = candidate_ports(ports_, random.Random(1)), candidate_ports(ports_, random.Random(2))
    assert len(first) == len(set(first)) == ports.ATTEMPTS and set(first) <= set(ports_)
    assert first != second
    assert sorted(candidate_ports(range(20000, 20003), random.Random(1))) == [20000, 20001, 20002]


def bound_port(sock: socket.socket) -> int:
    return sock.getsockname()[1]


def test_a_port_0_bind_takes_a_free_port_outside_the_ephemeral_range():
    low, _ = ephemeral_port_range()
    with RendezvousSocket() as sock:
        sock.bind(("", 0))
        port = bound_port(sock)
        assert port in rendezvous_ports((low, 0))
        with socket.socket() as other, pytest.raises(OSError):
            other.bind(("", port))  # it was free and is now ours
    with RendezvousSocket(socket.AF_INET6) as sock:
        sock.bind(("::1", 0))
        assert bound_port(sock) in rendezvous_ports((low, 0))


def test_a_taken_candidate_is_skipped_and_none_free_means_the_kernels_choice(monkeypatch):
    low, high = ephemeral_port_range()
    with socket.socket() as taken:
        taken.bind(("", 0))
        taken_port = bound_port(taken)
        monkeypatch.setattr(ports, "rendezvous_ports", lambda _: range(taken_port, taken_port + 2))
        with RendezvousSocket() as sock:
            sock.bind(("", 0))
            assert bound_port(sock) == taken_port + 1
        monkeypatch.setattr(ports, "rendezvous_ports", lambda _: range(taken_port, taken_port + 1))
        with RendezvousSocket() as sock:
            sock.bind(("", 0))
            assert bound_port(sock) != taken_port and low <= bound_port(sock) <= high


def test_explicit_ports_and_other_families_bind_as_usual():
    with RendezvousSocket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = bound_port(sock)
    with RendezvousSocket() as sock:
        sock.bind(("127.0.0.1", port))
        assert bound_port(sock) == port
    with RendezvousSocket(socket.AF_UNIX) as sock:
        sock.bind("")  # Linux abstract namespace: an autobind, not a port
    assert socket_module.socket is RendezvousSocket and socket_module.AF_INET is socket.AF_INET


def test_vllm_port_is_a_per_process_base_below_the_ephemeral_range():
    low, _ = ephemeral_port_range()
    bases = {int(vllm_port_env({})["VLLM_PORT"]) for _ in range(20)}
    assert len(bases) > 1 and all(20000 <= b < low - ports.VLLM_PORT_SPAN for b in bases)
    assert vllm_port_env({"VLLM_PORT": "31000"}) == {}


WORKER_CHECK = """
import os, socket
from openrlhf_ext.cpu import apply_worker_patches
apply_worker_patches()
assert 20000 <= int(os.environ["VLLM_PORT"]) < 32768
from openrlhf.trainer.ray import launcher, ppo_actor
from openrlhf_ext.reaches.ports import RendezvousSocket
assert launcher.socket.socket is ppo_actor.socket.socket is RendezvousSocket
port = launcher.BaseDistributedActor._get_free_port()
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
assert 20000 <= port < low, port
print("ok")
"""


def test_the_worker_hook_gives_openrlhf_rendezvous_ports():
    result = subprocess.run([sys.executable, "-c", WORKER_CHECK], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "ok"


@pytest.mark.slow
def test_an_openrlhf_actor_in_a_ray_worker_gets_a_rendezvous_master_port(local_ray):
    from openrlhf.trainer.ray.launcher import BaseDistributedActor

    low, _ = ephemeral_port_range()
    master = local_ray.remote(num_cpus=0)(BaseDistributedActor).remote(1, 0, None, None)
    try:
        _, port = local_ray.get(master.get_master_addr_port.remote(), timeout=120)
    finally:
        local_ray.kill(master)
    assert 20000 <= port < low
