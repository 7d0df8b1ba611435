"""Row ``pty-vanish``: the serial port disappears mid-image and comes back under another name.

A real pty carries the exchange and the host opens it through the real pyserial-asyncio-fast transport by
a stable symlink, as a gateway opens ``/dev/serial0`` or a udev ``by-id`` link. At a drawn firmware offset
the pty is closed (the host's descriptor hangs up); after a drawn pause a new pty is created, with a
new ``/dev/pts/N``, and the link is pointed at it. The updater's reconnect-on-LinkError must find it
again and resume from the device's RAM progress (the device itself was never reset), or fail cleanly.
"""

from __future__ import annotations

import asyncio
import os
import random
from pathlib import Path
from typing import Final

from mcu_updater.adapters import serial_connector
from mcu_updater.dfu.client import Timeouts
from mcu_updater.errors import McuUpdaterError
from mcu_updater.sim.device import Timing, VirtualNrf52
from mcu_updater.sim.faultmatrix import (
    Firmware,
    Outcome,
    classify,
    firmware_bytes,
    update,
    update_size,
)
from mcu_updater.sim.pty import PtyServer
from mcu_updater.sim.validation import Profile, image_kind

BAUD: Final = 1_000_000
"""The device models this line rate, so an image takes a fraction of a second and a drawn offset is
reached while it flows."""
# A real pty between two parts of a loaded machine: replies take milliseconds, not microseconds.
PTY_TIMEOUTS: Final = Timeouts(
    reply=0.5, execute_command=1.0, execute_data=0.5, execute_final=1.0, ping=0.1, ready=4.0
)
LONGEST_ABSENCE: Final = 2.0
"""Below the updater's reconnect deadline (``PTY_TIMEOUTS.ready``): the port comes back in time."""


async def pty_vanish(profile: Profile, firmware: Firmware, rng: random.Random, directory: Path) -> Outcome:
    device = VirtualNrf52(public_key=firmware.public_key, profile=profile, timing=Timing(baud=BAUD))
    link = directory / "ttyNRF52"
    connect = serial_connector(str(link), BAUD, True, PTY_TIMEOUTS)
    async with device:
        server = PtyServer(device, link=link)
        server.start()
        try:
            await update(device, firmware.previous, connect)
            assert device.bootloader.app_valid, "the clean install of application v1 failed"
            before = firmware_bytes(device)
            image = rng.choice(firmware.update.images)
            kind, threshold = image_kind(image.kind), rng.randrange(1, image.size)
            absence = rng.uniform(0.0, LONGEST_ABSENCE)
            fault = f"pty closed at {kind} offset {threshold}, back after {absence:.2f} s"
            task = asyncio.ensure_future(update(device, firmware.update, connect))
            start = device.stats.image_bytes[kind]
            # The device's byte count is the trigger; it has no event to wait on, so poll it finely.
            while not task.done() and device.stats.image_bytes[kind] - start < threshold:  # noqa: ASYNC110
                await asyncio.sleep(0.001)
            if not task.done():
                old_path = server.path
                server.close()
                await asyncio.sleep(absence)
                placeholders = _occupy(old_path)
                server = PtyServer(device, link=link)
                server.start()
                for fd in placeholders:
                    os.close(fd)
                fault += f" ({old_path} -> {server.path})"
            error = ""
            try:
                await task
            except McuUpdaterError as failure:
                error = failure.message
            resent = firmware_bytes(device) - before - update_size(firmware)
            return await classify(
                device,
                firmware,
                kind="pty-vanish",
                profile=profile,
                fault=fault,
                error=error,
                resent=resent,
                again=lambda: update(device, firmware.update, connect),
            )
        finally:
            server.close()


def _occupy(path: str) -> list[int]:
    """Other terminals take the freed pts numbers up to ``path``'s, so the port comes back renamed, as
    a re-enumerated adapter does. Returns their descriptors (none if the host still holds ``path``)."""
    taken: list[int] = []
    wanted = int(Path(path).name)
    while not Path(path).exists():
        taken += os.openpty()
        # The kernel may free the number a moment after the path went: then the next ones come out.
        if int(Path(os.ttyname(taken[-1])).name) >= wanted:
            break
    return taken
