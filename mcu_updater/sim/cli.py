"""``mcu-updater simulate``: a virtual nRF52 on a pty until SIGINT or SIGTERM, then a summary.

stdout: the first line is ``PTY /dev/pts/N``; then one line per reset, per init packet executed and per
image received; at exit a summary (traffic, resets, objects created and firmware bytes written, images
with versions and SHA-256, final inventory). A bad option is one line
on stderr and a sysexits code: 64 usage (bad key or state content), 66 missing key, 74 I/O.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from mcu_updater.errors import McuUpdaterError

# The values of sim.validation.Profile, spelled out so that listing them loads nothing heavy.
PROFILE_NAMES = ("sdk", "azure-sample")


def _baud(text: str) -> int:
    value = int(text, 0)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (instant) or a positive rate, got {text}")
    return value


def add_simulate_arguments(parser: argparse.ArgumentParser) -> None:
    """The simulate options, for a sub-command or a standalone parser."""
    parser.add_argument("--state", type=Path, required=True, help="JSON file holding the device's flash")
    parser.add_argument("--public-key", type=Path, help="key that verifies init-packet signatures (PEM)")
    parser.add_argument(
        "--profile",
        choices=PROFILE_NAMES,
        default=PROFILE_NAMES[0],
        help="stock SDK 15.2 bootloader, or the Azure Sphere sample's build (default sdk)",
    )
    parser.add_argument(
        "--baud", type=_baud, default=115200, help="line rate to model, 0 for instant (default 115200)"
    )
    parser.add_argument(
        "--flash-timing", action="store_true", help="model nRF52832 flash erase/write times and activation"
    )
    parser.add_argument(
        "--no-flow-control",
        action="store_true",
        help="the host ignores CTS: bytes sent during a flash stall overrun the UART and reset the device",
    )
    parser.add_argument("--link", type=Path, help="stable symlink to the pty, removed at exit")
    parser.add_argument(
        "--lines",
        type=Path,
        help="serve the reset and DFU pins on this Unix socket (they float, released, until a process "
        "holds them; the DFU pin is otherwise held asserted)",
    )


def add_simulate_parser(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "simulate",
        help="serve a virtual nRF52 bootloader on a pty",
        description="Run a virtual nRF52832 with the SDK 15.2 serial DFU bootloader on a pseudo-terminal "
        "until SIGINT or SIGTERM. The first stdout line is 'PTY <path>'.",
    )
    add_simulate_arguments(parser)


def run_simulate(args: argparse.Namespace) -> int:
    """Serve until SIGINT/SIGTERM; returns the exit code."""
    # Imported here so that `mcu-updater flash` does not pay for loading the simulator.
    from mcu_updater.sim.serve import serve, setup  # noqa: PLC0415

    try:
        return asyncio.run(serve(setup(args)))
    except McuUpdaterError as error:
        print(f"mcu-updater simulate: error: {error}", file=sys.stderr)
        return error.exit_code
