"""Backend ``virtual``: the target lines wired straight to a ``VirtualNrf52`` (demo and tests).

RESET asserted holds the device in reset, off and deaf; releasing it boots the device, which samples the
DFU line then: asserted, it stays in the bootloader; released with a valid application, the application
runs and the bootloader is silent.
"""

from __future__ import annotations

from collections.abc import Mapping

from mcu_updater.hw.specs import TargetLine
from mcu_updater.sim.device import VirtualNrf52
from mcu_updater.sim.gpio import FakeGpio


class VirtualTargetLines:
    """``hw.gpio.TargetLines`` on the virtual nRF52's nRESET and P0.16."""

    def __init__(self, device: VirtualNrf52, *, initial: Mapping[TargetLine, bool] | None = None) -> None:
        """Take over both pins at ``initial`` (default released), DFU first so a held reset sees it."""
        self._device = device
        initial = initial or {}
        for line in (TargetLine.DFU, TargetLine.RESET):
            self.set(line, initial.get(line, False))

    def set(self, line: TargetLine, active: bool) -> None:
        if line is TargetLine.RESET:
            self._device.hold_reset(active)
        else:
            self._device.dfu_pin = active

    def close(self) -> None:
        """Let go of both pins: like released open-drain lines, they float to inactive."""
        for line in (TargetLine.DFU, TargetLine.RESET):
            self.set(line, False)


def wire_to_gpio(device: VirtualNrf52, gpio: FakeGpio, *, reset: str, dfu: str) -> None:
    """Backend ``gpiod`` on a fake chip: its pins ``reset`` and ``dfu`` wired to the device's nRESET and
    P0.16, both active low with the target's pull-ups, so a released or undriven pin is inactive."""

    def drive_reset(level: int) -> None:
        device.hold_reset(level == 0)

    def drive_dfu(level: int) -> None:
        device.dfu_pin = level == 0

    gpio.wires[reset] = drive_reset
    gpio.wires[dfu] = drive_dfu
