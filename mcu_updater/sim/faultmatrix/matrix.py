"""Every row of the fault matrix, and the runner that fills its cells (kind x profile).

Rows differ in what they need: most run in memory, ``pty-vanish`` on a real pty, ``daemon-killed`` as
real processes, ``state-*`` in a child process with its own mount namespace. Every row's runs are
seeded (``seed/kind/profile/index``), so a report can be reproduced run by run.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mcu_updater.sim.faultmatrix import (
    CONCURRENT_RUNS,
    IN_MEMORY_KINDS,
    Cell,
    Firmware,
    InMemoryRun,
    Outcome,
    Shape,
    measure_shape,
    state_rows,
)
from mcu_updater.sim.faultmatrix.daemon_rows import button_presses, gpio_busy
from mcu_updater.sim.faultmatrix.killed import daemon_killed, daemon_killed_no_lines
from mcu_updater.sim.faultmatrix.pty_vanish import pty_vanish
from mcu_updater.sim.validation import Profile

RunOne = Callable[[Profile, Firmware, random.Random, Path], Awaitable[Outcome]]


@dataclass(frozen=True)
class Row:
    kind: str
    run: RunOne | None
    """One run; None for rows whose runs happen in a child process (``state_rows.run_cell``)."""
    concurrency: int
    """How many of its runs at a time; the in-memory rows share theirs."""
    within_one_run: bool
    """Whether a single run can survive the fault by itself; a killed run or a service that cannot
    start is finished by the next start instead."""


def _in_memory(kind: str, shapes: dict[Profile, Shape]) -> RunOne:
    async def run(profile: Profile, firmware: Firmware, rng: random.Random, _: Path) -> Outcome:
        return await InMemoryRun(kind, profile, firmware, shapes[profile], rng).execute()

    return run


ROWS: Final = (
    *(Row(kind, None, CONCURRENT_RUNS, kind != "host-killed") for kind in IN_MEMORY_KINDS),
    Row("pty-vanish", pty_vanish, 4, within_one_run=True),
    Row("daemon-killed", daemon_killed, 3, within_one_run=False),
    Row("daemon-killed-no-lines", daemon_killed_no_lines, 3, within_one_run=False),
    Row("button-presses", button_presses, CONCURRENT_RUNS, within_one_run=True),
    *(Row(kind, None, 1, within_one_run=True) for kind in state_rows.KINDS),
    Row("gpio-busy", gpio_busy, CONCURRENT_RUNS, within_one_run=False),
)
KINDS: Final = tuple(row.kind for row in ROWS)


async def run_matrix(
    firmware: dict[Profile, Firmware],
    *,
    runs: int,
    seed: int,
    kinds: tuple[str, ...] = KINDS,
    on_cell: Callable[[Cell], None] | None = None,
) -> list[Cell]:
    """``runs`` seeded runs per fault kind and profile; cells run side by side (their runs mostly wait
    on timeouts and line time), each row's runs a few at a time. Cells come back in row order."""
    needs_shape = any(kind in IN_MEMORY_KINDS for kind in kinds)
    shapes = {p: await measure_shape(p, f) for p, f in firmware.items()} if needs_shape else {}
    rows = [row for row in ROWS if row.kind in kinds]
    shared = asyncio.Semaphore(CONCURRENT_RUNS)
    limits = {
        row.kind: shared if row.kind in IN_MEMORY_KINDS else asyncio.Semaphore(row.concurrency)
        for row in rows
    }
    with tempfile.TemporaryDirectory(prefix="mcu-faults-") as scratch:

        async def one(row: Row, run: RunOne, profile: Profile, index: int) -> Outcome:
            rng = random.Random(f"{seed}/{row.kind}/{profile.value}/{index}")  # noqa: S311 - reproducible
            directory = Path(scratch) / f"{row.kind}-{profile.value}-{index}"
            directory.mkdir()
            async with limits[row.kind]:
                return await run(profile, firmware[profile], rng, directory)

        async def cell(row: Row, profile: Profile) -> Cell:
            result = Cell(row.kind, profile)
            if row.kind in state_rows.KINDS:
                directory = Path(scratch) / f"{row.kind}-{profile.value}"
                result.outcomes = await state_rows.run_cell(
                    row.kind, profile, runs=runs, seed=seed, directory=directory
                )
            else:
                run = row.run or _in_memory(row.kind, shapes)
                result.outcomes = list(
                    await asyncio.gather(*(one(row, run, profile, i) for i in range(runs)))
                )
            if on_cell is not None:
                on_cell(result)
            return result

        return list(await asyncio.gather(*(cell(row, profile) for row in rows for profile in firmware)))


def within_one_run(kind: str) -> bool:
    return next(row.within_one_run for row in ROWS if row.kind == kind)
