"""How the ``train_ppo_ray`` command words its errors: one line, ``PROG: error: --flag: ...`` for a bad
command line (exit code 2), as argparse words them but without its usage block."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

PROG = "python -m openrlhf_ext.cli.train_ppo_ray"


class ConfigError(ValueError):
    """An invalid flag or flag combination; the message starts with the flag it is about."""


def one_line_error(parser: argparse.ArgumentParser, message: str) -> None:
    """argparse's error() without the (very long) usage block: one line naming the flag."""
    parser.exit(2, f"{parser.prog}: error: {message} (see --help)\n")


def exit_with_error(message: str, code: int) -> NoReturn:
    """One line on stderr, as argparse words its errors, and exit ``code``."""
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)
