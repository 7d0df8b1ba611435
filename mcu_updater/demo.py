"""``mcu-updater demo``: the whole flash path on the virtual nRF52, no hardware needed.

A fresh simulated device (stock SDK 15.2 bootloader, S132 6.1.0, no application) is served on a real
pty with the nRF52832's line rate and flash timing; the bundled demo package (made with nrfutil 6.1.7
and signed with the demo key) is validated and flashed through the real serial stack, then flashed
again to show that an installed image is recognised from the device's inventory and skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

from mcu_updater.adapters import serial_connector
from mcu_updater.console import Renderer
from mcu_updater.dfu.package import load_package
from mcu_updater.updater import Options, UpdateRun

DEMO_BAUD = 115200
DEMO_HW_VERSION = 52


def add_demo_parser(commands: argparse._SubParsersAction[Any]) -> None:
    demo = commands.add_parser(
        "demo",
        help="flash the bundled demo package to a virtual nRF52 (no hardware)",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    demo.add_argument("--json", action="store_true", help="NDJSON events on stdout")
    demo.add_argument(
        "--no-flash-timing", action="store_true", help="an instant flash instead of nRF52832 timing"
    )


def _demo_files() -> tuple[Path, Path]:
    folder = resources.files("mcu_updater.sim") / "demo"
    return Path(str(folder / "demo_app_v1.zip")), Path(str(folder / "demo_public.pem"))


async def _demo(args: argparse.Namespace) -> int:
    # Imported here so that `mcu-updater flash` does not pay for loading the simulator or keys.
    from mcu_updater.dfu.keys import load_public_key  # noqa: PLC0415
    from mcu_updater.sim.device import Timing, VirtualNrf52  # noqa: PLC0415
    from mcu_updater.sim.pty import PtyServer  # noqa: PLC0415
    from mcu_updater.sim.serve import summary  # noqa: PLC0415
    from mcu_updater.sim.state import StateFile  # noqa: PLC0415

    package_path, key_path = _demo_files()
    renderer = Renderer(json_lines=args.json)
    public_key = load_public_key(key_path)
    package = await asyncio.to_thread(
        load_package, package_path, public_key=public_key, require_signature=True, hw_version=DEMO_HW_VERSION
    )
    with tempfile.TemporaryDirectory(prefix="mcu-updater-demo-") as tmp:
        device = VirtualNrf52(
            store=StateFile(Path(tmp) / "nrf52.json"),
            public_key=public_key,
            timing=Timing(baud=DEMO_BAUD, flash=not args.no_flash_timing),
        )
        async with device, PtyServer(device) as pty:
            if not args.json:
                print(f"virtual nRF52 (SDK 15.2 bootloader, S132 6.1.0, no application) on {pty.path}")
            connect = serial_connector(pty.path, DEMO_BAUD, flow_control=True)
            options = Options(hw_version=DEMO_HW_VERSION)
            for attempt in ("first run", "second run (nothing should be sent)"):
                if not args.json:
                    print(f"--- {attempt}: mcu-updater flash {package_path.name} --port {pty.path}")
                async for event in UpdateRun(package, connect, options).events():
                    renderer.emit(event)
            if not args.json:
                print("--- what the virtual nRF52 saw")
                for line in summary(device):
                    print(line)
    return 0


def run_demo(args: argparse.Namespace) -> int:
    return asyncio.run(_demo(args))
