"""``python -m openrlhf_ext.cli.train_ppo_ray``: OpenRLHF's ``train_ppo_ray`` with the papers' modes.

A strict superset of ``python -m openrlhf.cli.train_ppo_ray`` (see :mod:`openrlhf_ext.cli.train_config`):
every stock flag with its stock default, plus the estimators of docs/algorithms.md §2, the ``--ext.*`` grid
switches, the legacy flat flag spellings and ``--print_config``. With no model / data / reward
flags it trains the embedded SmolLM2-135M-Instruct on generated arithmetic problems.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from types import SimpleNamespace

from openrlhf_ext.cli.errors import exit_with_error
from openrlhf_ext.cli.train_config import dump_config, run_stock_main
from openrlhf_ext.job.checks import InputError


def train(args: SimpleNamespace) -> None:
    """Called by OpenRLHF's own validation code once the arguments are final."""
    if args.print_config:
        print(dump_config(args))
        return
    from openrlhf_ext.job.launch import launch
    from openrlhf_ext.reporting.console import run_console, show_report

    # Bad input found before Ray shows its one error line (main), nothing of the console.
    with run_console(args.ckpt.output_dir, verbose=args.ext.verbose, input_errors=(InputError,)) as log_path:
        launch(args)
    if log_path:
        show_report(args.ckpt.output_dir)


def main(argv: Sequence[str] | None = None) -> None:
    from openrlhf_ext.reporting.failures import RunFailure

    try:
        run_stock_main(sys.argv[1:] if argv is None else argv, train)
    except InputError as err:  # found before Ray started
        exit_with_error(str(err), code=2)
    except RunFailure as err:
        exit_with_error(str(err), code=1)


if __name__ == "__main__":
    main()
