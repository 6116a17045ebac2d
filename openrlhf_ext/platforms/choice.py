"""Which platform a run has, chosen once while the CLI resolves its configuration.

* ``$OPENRLHF_EXT_PLATFORM`` (``cuda`` / ``cpu``), when set, chooses without asking anyone (an
  autoscaling cluster whose GPU nodes are not up yet lists no GPU);
* a run that joins a Ray cluster (``RAY_ADDRESS`` set, other than ``local``; ``ray job submit``
  sets it for the job's driver) asks the cluster: a GPU anywhere in it means CUDA. The driver's own
  devices say nothing: under ``ray job submit`` it runs on the head node, which often has no GPU;
* a run that starts its own Ray looks at this machine's CUDA devices.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from openrlhf_ext.cpu.worker import PLATFORM_ENV
from openrlhf_ext.platforms.kinds import LOCAL, CpuPlatform, Platform, PlatformError

# Set by `ray job submit` for the job's driver: a bare ray.init() then joins the job with its
# runtime env (working_dir, ...). The look at the cluster's resources joins without it.
RAY_JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def platform_named(name: str, why: str, ray_address: str = LOCAL) -> Platform:
    """The platform ``name`` (``cuda`` / ``cpu``); the CPU one with this CPU's compute dtype."""
    if name == "cuda":
        return Platform(why, ray_address)
    if name == "cpu":
        from openrlhf_ext.cpu.dtype import cpu_param_dtype

        dtype, dtype_why = cpu_param_dtype()
        return CpuPlatform(why, ray_address, param_dtype=dtype, param_dtype_why=dtype_why)
    raise PlatformError(f"${PLATFORM_ENV}: must be cuda or cpu, got {name!r}")


def platform_of_cluster(resources: Mapping[str, float], address: str) -> Platform:
    """The platform of a run on the Ray cluster at ``address`` whose resources are ``resources``
    (``ray.cluster_resources()``): CUDA when any of its nodes has a GPU."""
    gpus = resources.get("GPU", 0)
    if gpus > 0:
        return platform_named("cuda", f"the Ray cluster at {address} lists {gpus:g} GPUs", address)
    return platform_named("cpu", f"the Ray cluster at {address} lists no GPU", address)


def platform_of_machine(cuda_devices: int) -> Platform:
    """The platform of a run that starts its own Ray on a machine with ``cuda_devices`` CUDA devices."""
    if cuda_devices > 0:
        return platform_named("cuda", f"this machine has {cuda_devices} CUDA devices; the run starts its own Ray")
    return platform_named("cpu", "this machine has no CUDA device; the run starts its own Ray")


def cluster_address(environ: Mapping[str, str]) -> str | None:
    """The Ray cluster the run joins (``RAY_ADDRESS``), or None when it starts its own."""
    address = environ.get("RAY_ADDRESS", "")
    return None if address in ("", LOCAL) else address


@contextmanager
def _without_env(name: str) -> Iterator[None]:
    saved = os.environ.pop(name, None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ[name] = saved


def cluster_resources(address: str) -> dict[str, float]:
    """``ray.cluster_resources()`` of the cluster at ``address``, read through a short connection
    that starts no worker (the one this process already has, if any: the run will use it)."""
    import ray

    if address.startswith(("http://", "https://")):
        raise PlatformError(f"RAY_ADDRESS={address}: the address of Ray's job API (for `ray job submit`), not "
                            f"of a cluster to join; unset it, or set ${PLATFORM_ENV}=cuda|cpu")
    if ray.is_initialized():
        return ray.cluster_resources()
    try:
        with _without_env(RAY_JOB_CONFIG_ENV):
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    except ConnectionError as err:
        raise PlatformError(f"RAY_ADDRESS={address}: cannot join the Ray cluster to read its resources: {err}; "
                            f"or set ${PLATFORM_ENV}=cuda|cpu") from None
    try:
        return ray.cluster_resources()
    finally:
        ray.shutdown()


def this_machine() -> Platform:
    """The platform of this machine's own devices (evaluation, a run that starts its own Ray)."""
    import torch

    return platform_of_machine(torch.cuda.device_count() if torch.cuda.is_available() else 0)


def choose_platform(environ: Mapping[str, str] = os.environ) -> Platform:
    """The run's platform (see the module docstring; the launch says it); :class:`PlatformError`
    when it cannot be chosen."""
    address = cluster_address(environ)
    forced = environ.get(PLATFORM_ENV)
    if forced:
        return platform_named(forced, f"${PLATFORM_ENV}={forced}", address or LOCAL)
    if address:
        return platform_of_cluster(cluster_resources(address), address)
    return this_machine()
