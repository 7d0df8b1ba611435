"""Rows that need the daemon: the button pressed during a run, and the GPIO lines held by another program.

The daemon is the real ``Daemon`` with the real libgpiod code (``GpiodTargetLines``, ``GpiodButton``) on
the fake chip of ``sim.gpio``, whose reset and DFU pins are wired to the virtual nRF52's nRESET and P0.16
(``sim.lines.wire_to_gpio``): a reset pulse really resets the device and loses its RAM progress.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import gpiod

from mcu_updater.daemon import Daemon, DaemonSettings
from mcu_updater.errors import LinkError
from mcu_updater.hw.button import GpiodButton
from mcu_updater.hw.gpio import TargetLines, open_target_lines
from mcu_updater.hw.specs import Backend, ButtonSpec, LineSpec, TargetLine
from mcu_updater.notify import Notifier
from mcu_updater.sim.device import Timing, VirtualNrf52
from mcu_updater.sim.faultmatrix import (
    Firmware,
    Outcome,
    classify,
    firmware_bytes,
    memory_connector,
    settled,
    update,
    update_size,
)
from mcu_updater.sim.gpio import FakeChip, FakeGpio
from mcu_updater.sim.lines import wire_to_gpio
from mcu_updater.sim.validation import Profile
from mcu_updater.target import Target
from mcu_updater.updater import Options

CHIP: Final = "/dev/gpiochip0"
RESET: Final = LineSpec(CHIP, "GPIO5")
DFU: Final = LineSpec(CHIP, "GPIO6")
BUTTON: Final = ButtonSpec(CHIP, "GPIO26", debounce=0.005)
BUTTON_BAUD: Final = 115_200
"""The device models this line rate, so a run lasts long enough to press the button several times."""


def gateway_gpio(device: VirtualNrf52) -> FakeGpio:
    """A Raspberry Pi's GPIO chip with the reset and DFU pins wired to the device."""
    gpio = FakeGpio(FakeChip(CHIP, "pinctrl-bcm2711", [f"GPIO{n}" for n in range(58)]))
    wire_to_gpio(device, gpio, reset=str(RESET.line), dfu=str(DFU.line))
    return gpio


def open_lines(gpio: FakeGpio) -> TargetLines:
    """As `mcu-updater run` opens them: the target held in reset while the daemon starts."""
    return open_target_lines(Backend.GPIOD, RESET, DFU, initial={TargetLine.RESET: True}, gpio=gpio)


async def until(condition: Callable[[], bool]) -> None:
    """Poll the daemon's public state (it offers no events)."""
    while not condition():  # noqa: ASYNC110
        await asyncio.sleep(0.005)


@dataclass
class Service:
    daemon: Daemon
    task: asyncio.Task[int]

    async def runs(self, count: int) -> None:
        await until(lambda: self.daemon.state.runs >= count and not self.daemon.running)


@contextlib.asynccontextmanager
async def service(
    device: VirtualNrf52,
    firmware: Firmware,
    directory: Path,
    lines: TargetLines,
    button: GpiodButton | None = None,
) -> AsyncIterator[Service]:
    """The daemon on ``lines`` until the block ends (then stopped as by SIGTERM, lines released)."""
    settings = DaemonSettings(
        load_firmware=lambda: firmware.update,
        connect=memory_connector(device),
        options=Options(abort_when_idle=True),
    )
    daemon = Daemon(
        settings,
        lines=lines,
        target=Target(lines),
        state_dir=directory / "state",
        runtime_dir=directory / "run",
        notifier=Notifier({}),
        button_start=button.start if button is not None else None,
        backoff=(0.05,),
    )
    task = asyncio.create_task(daemon.serve())
    try:
        yield Service(daemon, task)
    finally:
        daemon.stop()
        await task
        if button is not None:
            button.close()
        lines.close()


async def prepared_device(profile: Profile, firmware: Firmware, timing: Timing) -> VirtualNrf52:
    """A started device that runs application v1, installed by a clean run."""
    device = VirtualNrf52(public_key=firmware.public_key, profile=profile, timing=timing)
    device.start()
    try:
        await update(device, firmware.previous, memory_connector(device))
        await settled(device)
    except BaseException:
        await device.close()
        raise
    assert device.bootloader.app_valid, "the clean install of application v1 failed"
    return device


async def button_presses(
    profile: Profile, firmware: Firmware, rng: random.Random, directory: Path
) -> Outcome:
    """Presses (some with a bouncing contact) while the start-up run sends: exactly one more run follows,
    finds everything installed, and the running transfer sends every byte once."""
    device = await prepared_device(profile, firmware, Timing(baud=BUTTON_BAUD))
    try:
        before = firmware_bytes(device)
        gpio = gateway_gpio(device)
        presses = rng.randint(2, 6)
        during = 0
        async with service(
            device, firmware, directory, open_lines(gpio), GpiodButton(BUTTON, gpio=gpio)
        ) as running:
            await until(lambda: firmware_bytes(device) > before)
            for _ in range(presses):
                await gpio.press(str(BUTTON.line), hold=rng.uniform(0.01, 0.06), bounces=rng.randrange(3))
                await asyncio.sleep(BUTTON.debounce * 2)  # the kernel reports the edge a period later
                during += running.daemon.running
                await asyncio.sleep(rng.uniform(0.0, 0.1))
            # The queued run starts as soon as the first ends: take the first's record when it lands
            # (the second one, entering the bootloader alone, takes tens of milliseconds).
            await until(lambda: running.daemon.state.runs >= 1)
            first = running.daemon.state.last_run
            await running.runs(2)
            second = running.daemon.state.last_run
            # A third run would start at once: give the loop a moment to show one, then count.
            await asyncio.sleep(0.2)
            runs = running.daemon.state.runs + running.daemon.running
        fault = f"{presses} presses, {during} during the first run"
        resent = firmware_bytes(device) - before - update_size(firmware)
        problems = []
        if first is None or first.result != "updated":
            problems.append(
                f"first run {first.result if first else 'missing'}: {first.error if first else ''}"
            )
        if second is None or second.result != "up-to-date":
            problems.append(f"second run {second.result if second else 'missing'}")
        if runs != 2:
            problems.append(f"{runs} runs instead of 2")
        if resent:
            problems.append(f"{resent} bytes sent twice")
        return await classify(
            device,
            firmware,
            kind="button-presses",
            profile=profile,
            fault=fault,
            error="; ".join(problems),
            resent=resent,
            again=lambda: update(device, firmware.update, memory_connector(device)),
        )
    finally:
        await device.close()


HOLDERS: Final = (
    ("gpiomon", gpiod.LineSettings(direction=gpiod.line.Direction.INPUT)),
    (
        "gpioset",
        gpiod.LineSettings(direction=gpiod.line.Direction.OUTPUT, output_value=gpiod.line.Value.ACTIVE),
    ),
)


async def gpio_busy(profile: Profile, firmware: Firmware, rng: random.Random, directory: Path) -> Outcome:
    """Another program holds the reset or DFU line when the service starts: it fails naming the holder
    (exit 74) and touches nothing; systemd restarts it once the line is free and that run succeeds."""
    device = await prepared_device(profile, firmware, Timing())
    try:
        before = firmware_bytes(device)
        gpio = gateway_gpio(device)
        line = rng.choice((RESET, DFU))
        holder, settings = rng.choice(HOLDERS)
        chip = gpio.open_chip(CHIP)
        held = chip.request_lines({line.line: settings}, consumer=holder)
        chip.close()
        fault = f"{line.line} held by {holder}"
        error = ""
        try:
            lines = open_lines(gpio)
        except LinkError as failure:
            error = f"exit {failure.exit_code}: {failure}"
        else:
            lines.close()
            error = "the lines opened although one was held"
        named = holder in error
        held.release()

        async def restarted() -> None:
            async with service(device, firmware, directory, open_lines(gpio)) as running:
                await running.runs(1)

        outcome = await classify(
            device,
            firmware,
            kind="gpio-busy",
            profile=profile,
            fault=fault,
            error=error,
            resent=firmware_bytes(device) - before,
            again=restarted,
        )
        # A message that does not name the holder leaves the operator guessing: not a clean failure.
        return outcome if named else dataclasses.replace(outcome, recovered=False)
    finally:
        await device.close()
