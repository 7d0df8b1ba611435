"""The simulate command's body: build the device from its options, serve it on a pty, report."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from mcu_updater.dfu.keys import load_public_key
from mcu_updater.dfu.wire import ImageType
from mcu_updater.sim.device import Timing, VirtualNrf52
from mcu_updater.sim.linesock import LineServer
from mcu_updater.sim.pty import PtyServer
from mcu_updater.sim.state import FlashState, StateFile
from mcu_updater.sim.validation import Profile

EXIT_IO = 74


@dataclass(frozen=True)
class _Setup:
    store: StateFile
    flash: FlashState
    public_key: ec.EllipticCurvePublicKey | None
    profile: Profile
    timing: Timing
    flow_control: bool
    link: Path | None
    lines: Path | None


def setup(args: argparse.Namespace) -> _Setup:
    public_key = load_public_key(args.public_key) if args.public_key is not None else None
    store = StateFile(args.state)
    flash = store.load()
    store.save(flash)  # fail now, not at the first settings write, if the state cannot be written
    return _Setup(
        store=store,
        flash=flash,
        public_key=public_key,
        profile=Profile(args.profile),
        timing=Timing(baud=args.baud or None, flash=args.flash_timing),
        flow_control=not args.no_flow_control,
        link=args.link,
        lines=args.lines,
    )


def _say(line: str) -> None:
    print(line, flush=True)


async def serve(setup: _Setup) -> int:
    already_received = len(setup.flash.images)
    device = VirtualNrf52(
        flash=setup.flash,
        store=setup.store,
        profile=setup.profile,
        public_key=setup.public_key,
        timing=setup.timing,
        flow_control=setup.flow_control,
        dfu_pin=setup.lines is None,  # served lines float until a process requests them
        on_event=_say,
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(device)
        server = await stack.enter_async_context(PtyServer(device, link=setup.link))
        if setup.lines is not None:
            await stack.enter_async_context(LineServer(device, setup.lines))
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        try:
            _say(f"PTY {server.path}")  # only now: a host may signal as soon as it reads this
            stopped = asyncio.create_task(stop.wait())
            serving = asyncio.create_task(device.serve_forever())
            await asyncio.wait({stopped, serving}, return_when=asyncio.FIRST_COMPLETED)
            for task in (stopped, serving):
                task.cancel()
            await asyncio.gather(stopped, serving, return_exceptions=True)
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)
    for line in summary(device, already_received):
        _say(line)
    if device.persist_error is not None:
        print(f"mcu-updater simulate: error: {device.persist_error}", file=sys.stderr)
        return EXIT_IO
    return 0


def summary(device: VirtualNrf52, skip_images: int = 0) -> list[str]:
    """Closing report: traffic, resets, images received (after the first ``skip_images``), inventory."""
    stats = device.stats
    resets = ", ".join(f"{reason} {count}" for reason, count in sorted(stats.resets.items()))
    lines = [
        f"summary: {stats.bytes_in} bytes in, {stats.bytes_out} bytes out "
        f"({stats.bytes_lost} lost, {stats.bytes_ignored} ignored by the app, {stats.bytes_discarded} "
        f"unread); {stats.frames_in} frames in, {stats.frames_out} out; "
        f"{stats.reset_count} resets{f' ({resets})' if resets else ''}"
    ]
    created = stats.objects_created
    written = ", ".join(f"{kind} {count}" for kind, count in sorted(stats.image_bytes.items()))
    lines.append(
        f"objects: command {created['command']} created, {stats.init_executes} executed; "
        f"data {created['data']} created; firmware bytes written: {written or 'none'}"
    )
    images = device.bootloader.flash.images[skip_images:]
    lines += [
        f"image: {image.kind} v{image.version}, {image.size} B, sha256 {image.sha256}, "
        f"{'activated' if image.activated else 'not activated'}"
        for image in images
    ] or ["image: none received"]
    softdevice = device.bootloader.flash.softdevice
    for entry in device.bootloader.inventory():
        kind = ImageType(entry.image_type).name.lower()
        fwid = (
            f" FWID 0x{softdevice.fwid:02X}"
            if entry.image_type == ImageType.SOFTDEVICE and softdevice
            else ""
        )
        lines.append(
            f"inventory: {kind} v{entry.version}{fwid} at 0x{entry.address:05X}, length {entry.length}"
        )
    return lines
