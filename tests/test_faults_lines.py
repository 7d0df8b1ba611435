"""The pins the fault matrix wires to the virtual nRF52: a fake GPIO chip's, and the line socket that
lets another process hold them (and releases them when that process goes, as the kernel does)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from mcu_updater.errors import LinkError
from mcu_updater.hw.specs import TargetLine
from mcu_updater.sim.bootloader import Mode
from mcu_updater.sim.device import VirtualNrf52
from mcu_updater.sim.faultmatrix import build_firmware, memory_connector, settled, update
from mcu_updater.sim.faultmatrix.daemon_rows import gateway_gpio, open_lines
from mcu_updater.sim.linesock import LineServer, SocketTargetLines
from mcu_updater.target import Target


async def until(condition: Callable[[], bool]) -> None:
    while not condition():  # noqa: ASYNC110 - the device offers no events for its mode
        await asyncio.sleep(0.005)


@pytest.fixture
async def device(tmp_path: Path) -> VirtualNrf52:
    """A device that runs a valid application, its DFU pin floating (released)."""
    firmware = build_firmware(tmp_path / "firmware", signed=True)
    device = VirtualNrf52(public_key=firmware.public_key)
    device.start()
    await update(device, firmware.previous, memory_connector(device))
    await settled(device)
    device.dfu_pin = False
    return device


async def test_fake_chip_pins_move_the_device_between_bootloader_and_application(
    device: VirtualNrf52,
) -> None:
    gpio = gateway_gpio(device)
    lines = open_lines(gpio)
    try:
        assert device.mode is Mode.OFF, "held in reset while the service starts"
        target = Target(lines)
        await target.enter_bootloader()
        assert await device.until_booted() is Mode.DFU
        await target.return_to_app()
        assert await device.until_booted() is Mode.APP
    finally:
        lines.close()
        await device.close()


async def test_line_socket_is_exclusive_and_released_when_its_holder_goes(
    device: VirtualNrf52, tmp_path: Path
) -> None:
    path = tmp_path / "lines"
    async with LineServer(device, path) as server:
        first = await asyncio.to_thread(
            SocketTargetLines, path, consumer="first", initial={TargetLine.RESET: True}
        )
        await until(lambda: device.mode is Mode.OFF)
        with pytest.raises(LinkError, match="already in use by 'first'"):
            await asyncio.to_thread(SocketTargetLines, path, consumer="second")
        first.set(TargetLine.DFU, True)
        first.set(TargetLine.RESET, False)
        await until(lambda: device.mode is Mode.DFU)
        first.close()  # as if killed: the lines float, which resets nothing
        await until(lambda: not server.holder)
        assert device.mode is Mode.DFU
        assert not device.dfu_pin
        second = await asyncio.to_thread(
            SocketTargetLines, path, consumer="second", initial={TargetLine.RESET: True}
        )
        await until(lambda: device.mode is Mode.OFF)
        second.set(TargetLine.RESET, False)
        assert await device.until_booted() is Mode.APP, "DFU floats released: the application boots"
        second.close()
    await device.close()
