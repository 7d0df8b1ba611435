"""What the configuration says about the wiring: plain values shared by the config loader and the adapters.

Line values are logical everywhere: ``active=True`` means asserted (reset held, DFU requested, button
pressed), whatever the electrical polarity; ``active_low`` maps it to the pin.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Drive(enum.StrEnum):
    OPEN_DRAIN = "open-drain"
    PUSH_PULL = "push-pull"


class Backend(enum.StrEnum):
    GPIOD = "gpiod"
    """libgpiod v2 character device lines."""
    NONE = "none"
    """No lines: the target is brought into its bootloader some other way; runs only ping."""
    VIRTUAL = "virtual"
    """The virtual nRF52's own reset and DFU lines (demo and tests)."""


class TargetLine(enum.StrEnum):
    RESET = "reset"
    DFU = "dfu"


@dataclass(frozen=True)
class LineSpec:
    """One GPIO line: chip by path (``/dev/gpiochip0``) or label (``pinctrl-bcm2711``), line by name or
    offset."""

    chip: str
    line: str | int
    active_low: bool = True
    drive: Drive = Drive.OPEN_DRAIN


@dataclass(frozen=True)
class ButtonSpec:
    chip: str
    line: str | int
    active_low: bool = True
    debounce: float = 0.02
    """Seconds of kernel debounce."""


@dataclass(frozen=True)
class Step:
    """Set ``line`` to ``active``, then hold ``hold`` seconds before the next step."""

    line: TargetLine
    active: bool
    hold: float = 0.0


# Assert DFU, pulse reset for 20 ms (the nRF52 needs far less, a long cable more), release it and give
# the bootloader a moment to sample the DFU pin; the caller then pings until it answers.
DEFAULT_ENTER_BOOTLOADER = (
    Step(TargetLine.DFU, active=True, hold=0.001),
    Step(TargetLine.RESET, active=True, hold=0.020),
    Step(TargetLine.RESET, active=False, hold=0.005),
)
# Release DFU, then pulse reset so the application boots.
DEFAULT_RETURN_TO_APP = (
    Step(TargetLine.DFU, active=False, hold=0.001),
    Step(TargetLine.RESET, active=True, hold=0.020),
    Step(TargetLine.RESET, active=False),
)
