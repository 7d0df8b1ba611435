"""The ``mcu-updater`` command: argument parsing, real adapters, and errors mapped to exit codes.

Exit codes (sysexits): 0 success or nothing to do, 64 usage, 65 package invalid or refused by the
device, 66 package, key or firmware file missing, 69 target not answering, 74 serial or GPIO I/O
error, 75 transient failure that outlasted the retries, 78 configuration error, 70 internal error,
130 interrupted. Exit 1 is `verify`'s "the device does not run exactly the package's versions" and
`doctor`'s "a check failed".
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any, Final, NoReturn

from mcu_updater import __version__
from mcu_updater.adapters import load_validated_package, serial_connector
from mcu_updater.apply import add_apply_parsers, run_apply, run_verify
from mcu_updater.console import Renderer
from mcu_updater.demo import add_demo_parser, run_demo
from mcu_updater.dfu.client import Timeouts
from mcu_updater.dfu.package import DfuPackage
from mcu_updater.doctor import add_doctor_parser, run_doctor
from mcu_updater.errors import McuUpdaterError, UsageError
from mcu_updater.package_cli import add_package_parser, run_package
from mcu_updater.sim.cli import add_simulate_parser, run_simulate
from mcu_updater.updater import Connector, Options, UpdateRun

EXIT_INTERNAL = 70
# The configuration's default location (config.DEFAULT_PATH), spelled out to keep `flash` light.
DEFAULT_CONFIG: Final = Path("/etc/mcu-updater/mcu-updater.yaml")
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message, f"see '{self.prog} --help'")


def _positive(text: str) -> int:
    value = int(text, 0)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _prn(text: str) -> int:
    value = int(text, 0)
    if not 0 <= value <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"must be 0..65535, got {text}")
    return value


def add_serial_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", required=True, help="serial device of the target, e.g. /dev/serial0")
    parser.add_argument("--baud", type=_positive, default=115200, help="baud rate (default 115200)")
    parser.add_argument(
        "--no-flow-control",
        action="store_true",
        help="disable RTS/CTS (writes are then paced with PRN 1 unless --prn says otherwise)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="mcu-updater",
        description="Keep the firmware of a wired nRF52 (nRF5 SDK 15.2 serial DFU bootloader) up to date.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    flash = commands.add_parser(
        "flash",
        help="send a DFU package to a target already in its bootloader",
        description="Validate PACKAGE, read the device's inventory, skip the images it already "
        "runs and send the rest, one DFU session per image.",
    )
    flash.add_argument("package", type=Path, help="nrfutil .zip, or a .bin/.dat pair (either path)")
    add_serial_arguments(flash)
    flash.add_argument("--prn", type=_prn, default=None, help="packet receipt notification interval")
    flash.add_argument(
        "--public-key", type=Path, help="PEM or nrfutil C-array public key; unsigned packages are refused"
    )
    flash.add_argument("--hw-version", type=int, help="the target's hw_version; refuse packages for others")
    flash.add_argument("--force", action="store_true", help="send images even if already installed")
    flash.add_argument(
        "--ready-timeout",
        type=_positive_seconds,
        default=Timeouts().ready,
        help="how long to ping for the bootloader before giving up (default %(default)s s)",
    )
    flash.add_argument("--json", action="store_true", help="NDJSON events on stdout")

    add_daemon_parsers(commands)
    add_apply_parsers(commands, DEFAULT_CONFIG)
    add_doctor_parser(commands)
    add_simulate_parser(commands)
    add_demo_parser(commands)
    add_package_parser(commands)
    return parser


def add_daemon_parsers(commands: argparse._SubParsersAction[Any]) -> None:
    def config_option(parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "--config", type=Path, default=DEFAULT_CONFIG, help="configuration file (default %(default)s)"
        )

    run = commands.add_parser("run", help="the daemon (what the systemd unit starts)")
    config_option(run)
    trigger = commands.add_parser("trigger", help="ask the running daemon for an update check now")
    config_option(trigger)
    status = commands.add_parser("status", help="the daemon, the target's inventory and the last run")
    config_option(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    check = commands.add_parser("check-config", help="validate a configuration file (exit 0 or 78)")
    check.add_argument("file", type=Path, nargs="?", default=DEFAULT_CONFIG)


async def run_flash(package: DfuPackage, connect: Connector, options: Options, renderer: Renderer) -> None:
    async for event in UpdateRun(package, connect, options).events():
        renderer.emit(event)


async def _flash(args: argparse.Namespace) -> int:
    renderer = Renderer(json_lines=args.json)
    try:
        package = await asyncio.to_thread(
            load_validated_package, args.package, args.public_key, args.hw_version
        )
        prn = args.prn if args.prn is not None else (1 if args.no_flow_control else 0)
        options = Options(
            force=args.force, prn=prn, hw_version=args.hw_version, flow_control=not args.no_flow_control
        )
        timeouts = Timeouts(ready=args.ready_timeout)
        connect = serial_connector(args.port, args.baud, not args.no_flow_control, timeouts)
        await run_flash(package, connect, options, renderer)
    except McuUpdaterError as error:
        renderer.error({"exit_code": error.exit_code, "error": error.message, "hint": error.hint})
        raise
    return 0


DAEMON_COMMANDS = ("run", "trigger", "status", "check-config")


def _daemon_command(args: argparse.Namespace) -> int:
    # Imported here so that `flash` does not load the daemon, config and GPIO modules.
    from mcu_updater import service  # noqa: PLC0415
    from mcu_updater.config import check_config_main  # noqa: PLC0415

    if args.command == "check-config":
        return check_config_main(args.file)
    if args.command == "run":
        return asyncio.run(service.run_service(args.config))
    if args.command == "trigger":
        return asyncio.run(service.trigger(args.config))
    return asyncio.run(service.status(args.config, as_json=args.json))


def report(error: McuUpdaterError) -> int:
    print(f"mcu-updater: error: {error}", file=sys.stderr)
    return error.exit_code


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        if args.command in DAEMON_COMMANDS:
            return _daemon_command(args)
        handlers = {
            "flash": lambda: asyncio.run(_flash(args)),
            "simulate": lambda: run_simulate(args),
            "demo": lambda: run_demo(args),
            "package": lambda: run_package(args),
            "doctor": lambda: run_doctor(args),
            "apply": lambda: run_apply(args),
            "verify": lambda: run_verify(args),
        }
        return handlers[args.command]()
    except McuUpdaterError as error:
        return report(error)
    except KeyboardInterrupt:
        print("mcu-updater: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001 - the last line of defence against a traceback
        print(
            f"mcu-updater: internal error: {type(error).__name__}: {error}; please report it with the "
            "command line that produced it",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
