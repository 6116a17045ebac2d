"""The ``train_ppo_ray`` command line: OpenRLHF 0.11.2's parser and validation, extended.

:func:`run_stock_main` runs OpenRLHF's own ``__main__`` block (:mod:`openrlhf_ext.cli.stock_main`)
and, at its ``parse_args`` call:

1. extends the fully built stock parser (:mod:`openrlhf_ext.cli.ext_flags`): more choices for the
   estimator / policy loss / loss aggregation, the ``--ext.*`` grid switches, the legacy flat
   spellings (:mod:`openrlhf_ext.cli.legacy_flags`) and ``--print_config``;
2. parses, checks the numeric ranges, expands the estimator preset into the grid switches and
   validates our additions (:mod:`openrlhf_ext.cli.resolve`);
3. OpenRLHF's own validation then runs unchanged on the result and finally calls the ``train``
   function we pass in.

So every stock flag keeps its stock default and meaning, and an OpenRLHF upgrade that changes
the parser is picked up (or breaks loudly in ``tests/test_cli.py``).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from types import SimpleNamespace
from typing import Any

from openrlhf_ext.cli.errors import ConfigError, exit_with_error
from openrlhf_ext.cli.ext_flags import extend_parser
from openrlhf_ext.cli.resolve import explicit_dests, finalize_extensions
from openrlhf_ext.cli.stock_main import exec_stock_main, stock_parser
from openrlhf_ext.job.checks import RangeError, check_numeric_ranges
from openrlhf_ext.reporting.records import config_to_dict


def build_parser() -> argparse.ArgumentParser:
    """The stock parser, extended (for docs, tests and the flag table)."""
    return extend_parser(stock_parser())


def run_stock_main(argv: Sequence[str], train: Callable[[SimpleNamespace], Any]) -> None:
    """Parse ``argv`` with the extended stock parser, run stock validation, then ``train(args)``."""

    def parse(parser: argparse.ArgumentParser) -> argparse.Namespace:
        extend_parser(parser)
        ns = parser.parse_args(list(argv))
        try:
            check_numeric_ranges(ns)
            return finalize_extensions(ns, explicit_dests(parser, argv))
        except (ConfigError, RangeError) as err:
            parser.error(str(err))

    validated: list[SimpleNamespace] = []
    try:
        exec_stock_main(parse, validated.append)
    except AssertionError as err:
        # OpenRLHF validates with bare asserts; turn them into one clear line and exit code 2.
        exit_with_error(str(err), code=2)
    args = validated[0]
    args.platform.adapt_validated(args)  # what stock validation set (with packing: flash attention)
    # Outside the try: an AssertionError raised while training is a failure, not a bad flag.
    train(args)


def resolve_train_config(flags: Sequence[str]) -> SimpleNamespace:
    """The training configuration ``flags`` resolve to, validated by the training CLI (no Ray)."""
    captured: list[SimpleNamespace] = []
    run_stock_main(list(flags), captured.append)
    return captured[0]


def dump_config(args: SimpleNamespace) -> str:
    """The resolved configuration as ``--print_config`` prints it: sorted, indented JSON."""
    return json.dumps(config_to_dict(args), indent=2, sort_keys=True, default=str)
