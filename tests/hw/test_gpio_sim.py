"""Target lines and button on the kernel's gpio-sim, through the real libgpiod bindings.

Needs a kernel with gpio-sim (``modprobe gpio-sim``), configfs mounted at /sys/kernel/config, and root to
create a chip. Elsewhere every test here is skipped, saying why.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gpiod
import pytest

from mcu_updater.errors import LinkError
from mcu_updater.hw.button import GpiodButton
from mcu_updater.hw.gpio import GpiodTargetLines
from mcu_updater.hw.specs import (
    DEFAULT_ENTER_BOOTLOADER,
    DEFAULT_RETURN_TO_APP,
    ButtonSpec,
    LineSpec,
    TargetLine,
)
from mcu_updater.target import run_sequence

CONFIGFS = Path("/sys/kernel/config")
GPIO_SIM = CONFIGFS / "gpio-sim"
LABEL = "mcu-updater-test"
NAMES = ("RESET_N", "DFU_N", "BUTTON_N")
RESET, DFU, BUTTON = range(3)


@dataclass(frozen=True)
class SimChip:
    path: str
    sysfs: Path
    """/sys/devices/platform/<dev>/<chip>: sim_gpio<offset>/{value,pull}."""

    def value(self, offset: int) -> int:
        return int((self.sysfs / f"sim_gpio{offset}" / "value").read_text())

    def pull(self, offset: int, up: bool) -> None:
        """What the outside world does to the pin: a pull-up (idle) or pulling it to ground."""
        (self.sysfs / f"sim_gpio{offset}" / "pull").write_text("pull-up" if up else "pull-down")


def _unavailable() -> str | None:
    if not CONFIGFS.is_dir():
        return "kernel has no gpio-sim (no configfs at /sys/kernel/config): mount it, then modprobe gpio-sim"
    if not GPIO_SIM.is_dir():
        return "kernel has no gpio-sim (no /sys/kernel/config/gpio-sim): run modprobe gpio-sim as root"
    if not os.access(GPIO_SIM, os.W_OK):
        return "gpio-sim is there but creating a chip needs root"
    return None


@pytest.fixture
def sim_chip() -> Iterator[SimChip]:
    """A live gpio-sim chip with 8 lines, the first three named; removed afterwards."""
    reason = _unavailable()
    if reason is not None:
        pytest.skip(reason)
    device = GPIO_SIM / f"mcu-updater-{os.getpid()}"
    bank = device / "bank0"
    lines = [bank / f"line{offset}" for offset in range(len(NAMES))]
    try:
        bank.mkdir(parents=True)
        (bank / "num_lines").write_text("8")
        (bank / "label").write_text(LABEL)
        for line, name in zip(lines, NAMES, strict=True):
            line.mkdir()
            (line / "name").write_text(name)
        (device / "live").write_text("1")
        chip_name = (bank / "chip_name").read_text().strip()
        chip = SimChip(
            f"/dev/{chip_name}",
            Path("/sys/devices/platform") / (device / "dev_name").read_text().strip() / chip_name,
        )
        deadline = time.monotonic() + 5
        while not Path(chip.path).exists() and time.monotonic() < deadline:  # udev creates the node
            time.sleep(0.01)
        # The nRF52's pull-ups on its reset and DFU pins: what released open-drain lines read.
        chip.pull(RESET, up=True)
        chip.pull(DFU, up=True)
        yield chip
    finally:
        if (device / "live").exists():
            (device / "live").write_text("0")
        for line in lines:
            if line.exists():
                line.rmdir()
        for directory in (bank, device):
            if directory.exists():
                directory.rmdir()


async def test_target_lines_by_label_and_name_drive_the_pins(sim_chip: SimChip) -> None:
    lines = GpiodTargetLines(
        LineSpec(LABEL, "RESET_N"), LineSpec(sim_chip.path, DFU), initial={TargetLine.RESET: True}
    )
    assert (sim_chip.value(RESET), sim_chip.value(DFU)) == (0, 1)
    with gpiod.Chip(sim_chip.path) as chip:
        info = chip.get_line_info(RESET)
        assert (info.consumer, info.drive, info.active_low) == (
            "mcu-updater",
            gpiod.line.Drive.OPEN_DRAIN,
            True,
        )
    await run_sequence(lines, DEFAULT_ENTER_BOOTLOADER)
    assert (sim_chip.value(RESET), sim_chip.value(DFU)) == (1, 0)
    await run_sequence(lines, DEFAULT_RETURN_TO_APP)
    assert (sim_chip.value(RESET), sim_chip.value(DFU)) == (1, 1)
    lines.close()
    with gpiod.Chip(sim_chip.path) as chip:
        assert not chip.get_line_info(RESET).used


async def test_the_button_reports_one_press_per_debounced_press(sim_chip: SimChip) -> None:
    spec = ButtonSpec(sim_chip.path, BUTTON, debounce=0.02)
    button = GpiodButton(spec)
    presses: list[float] = []
    button.start(lambda: presses.append(time.monotonic()))
    try:
        for _ in range(2):
            for up in (False, True, False, True, False):  # a press with chatter
                sim_chip.pull(BUTTON, up=up)
                await asyncio.sleep(0.002)
            await asyncio.sleep(0.06)
            sim_chip.pull(BUTTON, up=True)
            await asyncio.sleep(0.06)
    finally:
        button.close()
    assert len(presses) == 2


def test_a_line_held_by_another_program_is_named(sim_chip: SimChip) -> None:
    settings = gpiod.LineSettings(direction=gpiod.line.Direction.OUTPUT)
    with gpiod.request_lines(sim_chip.path, {DFU: settings}, consumer="other-program"):
        with pytest.raises(LinkError, match="in use by 'other-program'"):
            GpiodTargetLines(LineSpec(LABEL, RESET), LineSpec(LABEL, DFU))
        with gpiod.Chip(sim_chip.path) as chip:
            assert not chip.get_line_info(RESET).used  # all or nothing
