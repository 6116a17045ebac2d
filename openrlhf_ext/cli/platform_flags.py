"""The platform's part in resolving the flags: the platform is chosen once, then sets the layout,
its defaults and adaptations (or refuses the configuration) before ``--print_config`` and Ray, so
the printed configuration is the one that runs. A platform's refusal is a :class:`ConfigError`."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager

from openrlhf_ext.cli.errors import ConfigError
from openrlhf_ext.platforms import Platform, PlatformError, choose_platform


@contextmanager
def _refusal_as_config_error() -> Iterator[None]:
    try:
        yield
    except PlatformError as err:
        raise ConfigError(str(err)) from None


def run_platform() -> Platform:
    """The run's platform, chosen once (:func:`openrlhf_ext.platforms.choose_platform`)."""
    with _refusal_as_config_error():
        return choose_platform()


def apply_platform(ns: argparse.Namespace, explicit: set[str], platform: Platform) -> set[str]:
    """The platform's defaults (a ``--ds.param_dtype`` the user did not give: on CPU, the one this CPU
    computes fast) and adaptations (on CPU: flags that can only mean CUDA), or its refusal. Returns
    the dests set."""
    with _refusal_as_config_error():
        return platform.apply_to(ns, explicit)


def size_layout(ns: argparse.Namespace, explicit: set[str], platform: Platform) -> set[str]:
    """OpenRLHF's layout defaults are a GPU node's (8 policy, 8 reference, 8 critic ranks). On the
    CPU platform when the run starts its own Ray (or for the embedded demo) every layout flag the
    user did not give becomes one rank / one engine (the launch says so, from the provenance 'cpu').
    Call before the demo fills in its model. Returns the dests set."""
    from openrlhf_ext.cpu.layout import laptop_layout

    if not (platform.sizes_layout or getattr(ns, "actor.model_name_or_path") is None):
        return set()
    changes = laptop_layout(vars(ns), explicit)
    for dest, (_, new) in changes.items():
        setattr(ns, dest, new)
    return set(changes)
