"""``mcu-updater demo``: the real daemon, end to end, on a virtual nRF52 (no hardware needed).

The demo writes a configuration like a gateway's, with ``gpio.backend: virtual``, and runs the daemon
code of ``mcu-updater run`` on it: a virtual nRF52 (stock SDK 15.2 bootloader, S132 6.1.0, no
application) served on a real pty with the nRF52832's line rate and flash timing; its reset and DFU
lines, which really decide whether it boots into its bootloader; and an update button on a virtual
GPIO chip. Firmware: a SoftDevice and an application package built on the spot, reproducibly.

First run (at start-up): both images are installed. Then the demo presses the button: the second run
finds everything up to date. Exit 0 when both runs did what they should.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import textwrap
from pathlib import Path
from typing import Any, Final

DEMO_BAUD: Final = 115200
BUTTON_CHIP: Final = "virtual-buttons"
BUTTON_LINE: Final = "UPDATE"


def add_demo_parser(commands: argparse._SubParsersAction[Any]) -> None:
    demo = commands.add_parser(
        "demo",
        help="run the daemon on a virtual nRF52 with virtual lines and button (no hardware)",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    demo.add_argument(
        "--no-flash-timing", action="store_true", help="an instant flash instead of nRF52832 timing"
    )


def _config_text(folder: Path, port: str) -> str:
    return textwrap.dedent(
        f"""\
        # Written by `mcu-updater demo`: a gateway's configuration, with virtual lines and button.
        serial:
          port: {port}
          baud: {DEMO_BAUD}
        gpio:
          backend: virtual
        button:
          chip: {BUTTON_CHIP}
          line: {BUTTON_LINE}
          debounce: 5ms
        target:
          hw_version: 52
          public_key: {folder / "demo_public_key.pem"}
        firmware: {folder / "firmware"}
        state_dir: {folder / "state"}
        runtime_dir: {folder / "run"}
        """
    )


async def _demo(args: argparse.Namespace, folder: Path) -> int:
    # Imported here so that other commands do not pay for loading the simulator and the daemon.
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    from mcu_updater import logs  # noqa: PLC0415
    from mcu_updater.config import load_config  # noqa: PLC0415
    from mcu_updater.hw.button import GpiodButton  # noqa: PLC0415
    from mcu_updater.hw.specs import TargetLine  # noqa: PLC0415
    from mcu_updater.service import make_daemon  # noqa: PLC0415
    from mcu_updater.sim.demo_firmware import build_demo_firmware  # noqa: PLC0415
    from mcu_updater.sim.device import Timing, VirtualNrf52  # noqa: PLC0415
    from mcu_updater.sim.gpio import FakeChip, FakeGpio  # noqa: PLC0415
    from mcu_updater.sim.lines import VirtualTargetLines  # noqa: PLC0415
    from mcu_updater.sim.pty import PtyServer  # noqa: PLC0415
    from mcu_updater.sim.serve import summary  # noqa: PLC0415
    from mcu_updater.sim.state import StateFile  # noqa: PLC0415

    firmware = build_demo_firmware(folder / "firmware")
    (folder / "demo_public_key.pem").write_bytes(
        firmware.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    device = VirtualNrf52(
        store=StateFile(folder / "nrf52.json"),
        public_key=firmware.public_key,
        timing=Timing(baud=DEMO_BAUD, flash=not args.no_flash_timing),
    )
    lines = VirtualTargetLines(device, initial={TargetLine.RESET: True})
    buttons = FakeGpio(FakeChip("/dev/gpiochip-virtual", BUTTON_CHIP, [BUTTON_LINE]))
    logs.configure_logging(level="info")
    async with device, PtyServer(device) as pty:
        config_path = folder / "mcu-updater.yaml"
        config_path.write_text(_config_text(folder, pty.path))
        config = load_config(config_path)
        print(f"virtual nRF52 on {pty.path}; configuration {config_path}", flush=True)
        button = GpiodButton(config.button, gpio=buttons) if config.button else None
        daemon = make_daemon(config, lines=lines, button=button)
        service = asyncio.create_task(daemon.serve())
        try:
            results = [await _next_result(daemon, 1)]
            print("--- pressing the update button", flush=True)
            await buttons.press(BUTTON_LINE)
            results.append(await _next_result(daemon, 2))
        finally:
            daemon.stop()
            await service
            if button is not None:
                button.close()
            lines.close()
        print("--- what the virtual nRF52 saw", flush=True)
        for line in summary(device):
            print(line, flush=True)
    ok = results == ["updated", "up-to-date"]
    print(f"demo {'succeeded' if ok else 'FAILED'}: first run {results[0]}, after the button {results[1]}")
    return 0 if ok else 1


async def _next_result(daemon: Any, runs: int) -> str:
    """Wait for run number ``runs`` to finish and return its result."""
    while daemon.state.runs < runs or daemon.running:  # noqa: ASYNC110 - the daemon's public state
        await asyncio.sleep(0.05)
    return str(daemon.state.last_run.result)


def run_demo(args: argparse.Namespace) -> int:
    with tempfile.TemporaryDirectory(prefix="mcu-updater-demo-") as folder:
        return asyncio.run(_demo(args, Path(folder)))
