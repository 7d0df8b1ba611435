"""The nRF52 as the daemon drives it: its reset and DFU lines, and the sequences that move it between
its application and its bootloader. Whether the bootloader then answers is checked by pinging (the
update run does that with a deadline), never assumed after a fixed sleep.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from mcu_updater.hw.gpio import NoTargetLines, TargetLines
from mcu_updater.hw.specs import DEFAULT_ENTER_BOOTLOADER, DEFAULT_RETURN_TO_APP, Step, TargetLine


async def run_sequence(lines: TargetLines, steps: Sequence[Step]) -> None:
    """Drive the lines step by step, holding each step for its time."""
    for step in steps:
        lines.set(step.line, step.active)
        if step.hold > 0:
            await asyncio.sleep(step.hold)


class Target:
    """Moves the target between its application and its bootloader."""

    def __init__(
        self,
        lines: TargetLines,
        *,
        enter_bootloader: Sequence[Step] = DEFAULT_ENTER_BOOTLOADER,
        return_to_app: Sequence[Step] = DEFAULT_RETURN_TO_APP,
    ) -> None:
        self.lines = lines
        self.enter_steps = tuple(enter_bootloader)
        self.return_steps = tuple(return_to_app)

    @property
    def holds_dfu(self) -> bool:
        """Whether a reset brings the target back to its bootloader (a DFU line is wired)."""
        return not isinstance(self.lines, NoTargetLines)

    def hold_in_reset(self) -> None:
        """Keep the target quiet while the daemon opens its resources (as the reference solution does)."""
        self.lines.set(TargetLine.RESET, True)

    async def enter_bootloader(self) -> None:
        await run_sequence(self.lines, self.enter_steps)

    async def return_to_app(self) -> None:
        await run_sequence(self.lines, self.return_steps)
