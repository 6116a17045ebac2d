"""OpenRLHF 0.11.2's ``train_ppo_ray`` ``__main__`` block, executed with its ``parse_args`` hooked.

OpenRLHF builds its parser and validates the arguments inside the ``if __name__ == "__main__":``
block of ``openrlhf/cli/train_ppo_ray.py``, so neither can be imported. Rather than copy that
block, :func:`exec_stock_main` executes it (read with :mod:`ast` from the installed file) with
``argparse.ArgumentParser.parse_args`` hooked for the duration (the ``parser`` reach of
:data:`openrlhf_ext.reaches.REACHES`): its one ``parse_args`` call, on the fully built parser, goes
to a function of ours, whose namespace stock validation then checks before calling ``train``.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from openrlhf_ext.reaches import Where, scoped

STOCK_MODULE = "openrlhf.cli.train_ppo_ray"

OnParse = Callable[[argparse.ArgumentParser], argparse.Namespace]
_on_parse: ContextVar[OnParse | None] = ContextVar("openrlhf_ext_on_parse", default=None)


def _stock_main_block() -> ast.Module:
    origin = importlib.util.find_spec(STOCK_MODULE).origin
    with open(origin, encoding="utf-8") as f:
        tree = ast.parse(f.read(), filename=origin)
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "__name__ == '__main__'":
            return ast.Module(body=node.body, type_ignores=[])
    raise RuntimeError(f"{origin}: no `if __name__ == '__main__'` block; OpenRLHF's CLI layout changed")


def parse_with_extensions(original: Callable) -> Callable:
    """The ``parser`` reach of :data:`openrlhf_ext.reaches.REACHES`: the first ``parse_args`` call
    inside :func:`_hooked_parse_args` (OpenRLHF's, on its fully built parser) goes to the hook."""

    def parse_args(self, args=None, namespace=None):
        on_parse = _on_parse.get()
        if on_parse is None:  # one shot: sub-parsers (and every parser outside the block) parse as usual
            return original(self, args, namespace)
        _on_parse.set(None)
        return on_parse(self)

    return parse_args


@contextmanager
def _hooked_parse_args(on_parse: OnParse) -> Iterator[None]:
    token = _on_parse.set(on_parse)
    try:
        with scoped(Where.PARSER):
            yield
    finally:
        _on_parse.reset(token)


def exec_stock_main(on_parse: OnParse, train: Callable[[SimpleNamespace], Any]) -> None:
    """Run OpenRLHF's ``__main__`` block: ``on_parse(parser)`` parses in place of its ``parse_args``,
    then its validation runs on the result and calls ``train(args)``."""
    code = compile(_stock_main_block(), importlib.util.find_spec(STOCK_MODULE).origin, "exec")
    with _hooked_parse_args(on_parse):
        exec(code, {"__name__": "__main__", "argparse": argparse, "datetime": datetime, "train": train})  # noqa: S102


class _ParserCaptured(Exception):
    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser


def stock_parser() -> argparse.ArgumentParser:
    """OpenRLHF 0.11.2's own ``train_ppo_ray`` parser, as its ``__main__`` block builds it."""

    def capture(parser: argparse.ArgumentParser) -> argparse.Namespace:
        raise _ParserCaptured(parser)  # the block stops here: nothing of its validation runs

    try:
        exec_stock_main(capture, train=lambda args: None)
    except _ParserCaptured as captured:
        return captured.parser
    raise RuntimeError("OpenRLHF's __main__ block did not build a parser")
