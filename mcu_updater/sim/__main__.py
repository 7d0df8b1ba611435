"""``python -m mcu_updater.sim --state FILE ...``: the simulate command on its own."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from mcu_updater.sim.cli import add_simulate_arguments, run_simulate

EXIT_USAGE = 64


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}; see --help\n")


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="python -m mcu_updater.sim", description=__doc__)
    add_simulate_arguments(parser)
    return run_simulate(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
