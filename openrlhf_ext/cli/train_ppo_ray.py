"""``python -m openrlhf_ext.cli.train_ppo_ray``: OpenRLHF's ``train_ppo_ray`` with the papers' modes.

A strict superset of ``python -m openrlhf.cli.train_ppo_ray`` (see :mod:`openrlhf_ext.cli.args`):
every stock flag with its stock default, plus the estimators of SPEC §1, the ``--ext.*`` grid
switches, the legacy flat flag spellings and ``--print_config``. With no model / data / reward
flags it trains the embedded SmolLM2-135M-Instruct on generated arithmetic problems.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from types import SimpleNamespace

from openrlhf_ext.cli.args import dump_config, run_stock_main


def train(args: SimpleNamespace) -> None:
    """Called by OpenRLHF's own validation code once the arguments are final."""
    if args.print_config:
        print(dump_config(args))
        return
    from openrlhf_ext.trainer.launch import launch

    launch(args)


def main(argv: Sequence[str] | None = None) -> None:
    run_stock_main(sys.argv[1:] if argv is None else argv, train)


if __name__ == "__main__":
    main()
