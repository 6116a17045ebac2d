"""A run's configuration as plain data, for the files and trackers that record it."""

from __future__ import annotations

import dataclasses
import math
from types import SimpleNamespace
from typing import Any


def config_to_dict(args: SimpleNamespace) -> dict[str, Any]:
    def convert(value):
        if isinstance(value, SimpleNamespace):
            return {k: convert(v) for k, v in vars(value).items()}
        if dataclasses.is_dataclass(value) and not isinstance(value, type):  # typed settings (ExtConfig)
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple | list):
            return [convert(v) for v in value]
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return value

    return convert(args)
