"""Virtual target lines: the reset line holds the virtual nRF52 off, the DFU line picks what it boots."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from mcu_updater.hw.specs import DEFAULT_ENTER_BOOTLOADER, DEFAULT_RETURN_TO_APP, TargetLine
from mcu_updater.sim.bootloader import Mode
from mcu_updater.sim.device import Timing, VirtualNrf52
from mcu_updater.sim.lines import VirtualTargetLines
from mcu_updater.sim.memory import connect
from mcu_updater.sim.state import FlashState
from mcu_updater.target import run_sequence
from tests.sim.helpers import FrameHost, h
from tests.sim.test_device import with_app

FAST = Timing(quick_boot=0.02)
PING = h("09 01")
PONG = h("60 09 01 01")


@pytest.fixture
async def app_device() -> AsyncIterator[tuple[VirtualNrf52, FrameHost]]:
    """A booted device with a valid application, DFU pin asserted as the simulator's default, a host."""
    async with VirtualNrf52(flash=with_app(), timing=FAST) as nrf:
        assert await nrf.until_booted() is Mode.DFU
        transport, host = await connect(nrf, FrameHost)
        yield nrf, host
        transport.close()


async def test_reset_held_keeps_the_device_off_and_deaf_until_released(
    app_device: tuple[VirtualNrf52, FrameHost],
) -> None:
    nrf, host = app_device
    lines = VirtualTargetLines(nrf, initial={TargetLine.RESET: True})
    assert nrf.mode is Mode.OFF
    assert nrf.dfu_pin is False  # the lines took over the pin
    host.send(PING)
    assert await host.silent(0.05)
    assert nrf.stats.bytes_lost == 3
    booted = asyncio.ensure_future(nrf.until_booted())
    await asyncio.sleep(0.05)
    assert not booted.done()  # a held reset is not a boot, however long it lasts
    lines.set(TargetLine.RESET, False)
    assert await booted is Mode.APP  # DFU released and a valid app: the app runs
    host.send(PING)
    assert await host.silent(0.05)
    assert nrf.stats.bytes_ignored == 3
    assert nrf.stats.resets == {"pin-reset": 1}


async def test_the_default_sequences_enter_the_bootloader_and_return_to_the_app(
    app_device: tuple[VirtualNrf52, FrameHost],
) -> None:
    nrf, host = app_device
    lines = VirtualTargetLines(nrf)
    await run_sequence(lines, DEFAULT_ENTER_BOOTLOADER)
    assert await nrf.until_booted() is Mode.DFU
    assert await host.request(PING) == PONG
    await run_sequence(lines, DEFAULT_RETURN_TO_APP)
    assert await nrf.until_booted() is Mode.APP
    host.send(PING)
    assert await host.silent(0.05)  # the bootloader is silent while the app runs
    assert nrf.stats.resets == {"pin-reset": 2}


async def test_without_a_valid_app_releasing_reset_enters_the_bootloader() -> None:
    async with VirtualNrf52(flash=FlashState(), timing=FAST) as nrf:
        lines = VirtualTargetLines(nrf, initial={TargetLine.RESET: True})
        lines.set(TargetLine.RESET, False)
        assert await nrf.until_booted() is Mode.DFU


async def test_no_other_reset_boots_a_chip_whose_reset_is_held(
    app_device: tuple[VirtualNrf52, FrameHost],
) -> None:
    nrf, _ = app_device
    lines = VirtualTargetLines(nrf, initial={TargetLine.RESET: True, TargetLine.DFU: True})
    nrf.power_cycle()
    nrf.reset()
    assert nrf.mode is Mode.OFF
    assert nrf.stats.resets == {}
    lines.close()  # both lines float inactive: reset released, DFU not asserted
    assert nrf.dfu_pin is False
    assert await nrf.until_booted() is Mode.APP


async def test_a_device_powered_on_with_reset_held_stays_off() -> None:
    nrf = VirtualNrf52(flash=with_app(), timing=FAST)
    lines = VirtualTargetLines(nrf, initial={TargetLine.RESET: True, TargetLine.DFU: True})
    async with nrf:
        await asyncio.sleep(FAST.quick_boot * 2)
        assert nrf.mode is Mode.OFF
        lines.set(TargetLine.RESET, False)
        assert await nrf.until_booted() is Mode.DFU
