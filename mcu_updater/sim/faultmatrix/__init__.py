"""The fault matrix: seeded, randomised update runs against the virtual nRF52, one fault per run.

Every run starts from a device that runs a valid application v1 (installed by a clean run) and updates
it to a SoftDevice plus application v2 (two images, a reset and a re-connection between them), with one
fault injected at a drawn place: which reply, which byte, which frame, which firmware offset, how long.
The outcome is classified from the simulator's own records, never from what the host believes:

* success: the run returned and the device validated the exact SHA-256 of every image and runs the
  new application;
* clean failure: the run raised an ``McuUpdaterError`` with a message; the next, fault-free run must
  then succeed (``recovered``);
* brick: after the run, the previously valid application is invalid and the new one is not installed.

``bytes re-sent`` is every firmware byte the device received beyond the images' sizes.

This module holds the in-memory rows (``IN_MEMORY_KINDS``: replies dropped, delayed or corrupted, a
host byte corrupted, stalls, no flow control, power cycles, the port unplugged, the host killed without
a reset) and what every row shares. The other rows: ``pty_vanish`` (a real pty closed and re-created),
``killed`` (the service SIGKILLed and restarted, as processes), ``daemon_rows`` (button presses, GPIO
lines held by another program), ``state_rows`` (state directory full or read-only); ``matrix`` runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec

from mcu_updater.dfu.client import DfuClient, Timeouts
from mcu_updater.dfu.initpacket import FwType
from mcu_updater.dfu.link import DfuLink
from mcu_updater.dfu.package import DfuPackage, load_package
from mcu_updater.dfu.packager import ImageInput, write_package
from mcu_updater.dfu.wire import OpCode
from mcu_updater.errors import LinkError, McuUpdaterError
from mcu_updater.sim import memory
from mcu_updater.sim.demo_firmware import DEMO_SD_FWID, FRESH_SD_FWID, HW_VERSION, demo_key, softdevice_image
from mcu_updater.sim.device import Timing, VirtualNrf52
from mcu_updater.sim.faults import Faults, ReplyFault, Stall
from mcu_updater.sim.validation import Profile, image_kind
from mcu_updater.updater import Connector, ImageSent, Options, UpdateRun

# Replies are instant on the in-memory line, so timeouts this short only cost time where a fault hits;
# the execute timeouts still cover the flash timing's settings writes (182 ms).
TIMEOUTS: Final = Timeouts(
    reply=0.1, execute_command=0.4, execute_data=0.2, execute_final=0.4, ping=0.05, ready=3.0
)
LONGEST_TIMEOUT: Final = 0.4
PING_OPCODE: Final = int(OpCode.PING)
CONCURRENT_RUNS: Final = 8
SETTLE: Final = 0.5
"""Longer than the bootloader's work after its last reply (settings page and backup, 2 x 91 ms)."""

IN_MEMORY_KINDS: Final = (
    "reply-drop",
    "reply-delay",
    "reply-corrupt",
    "byte-corrupt",
    "stall",
    "no-flow-control",
    "power-cycle",
    "port-vanish",
    "host-killed",
)


@dataclass(frozen=True)
class Firmware:
    previous: DfuPackage
    """Application v1, installed before every run: the valid application a brick would destroy."""
    update: DfuPackage
    """SoftDevice + application v2."""
    public_key: ec.EllipticCurvePublicKey | None


def build_firmware(directory: Path, *, signed: bool) -> Firmware:
    """Small, reproducible packages (demo key), so that hundreds of runs take seconds."""
    directory.mkdir(parents=True, exist_ok=True)
    key = demo_key() if signed else None
    rng = random.Random(2)  # noqa: S311 - reproducible filler, not a secret
    app_v1 = ImageInput(FwType.APPLICATION, rng.randbytes(8 * 1024), "app_v1", 1, (FRESH_SD_FWID,))
    softdevice = ImageInput(
        FwType.SOFTDEVICE, softdevice_image(0x3000), "sd", 0, sd_req=(FRESH_SD_FWID, DEMO_SD_FWID)
    )
    app_v2 = ImageInput(FwType.APPLICATION, rng.randbytes(10 * 1024 + 4), "app_v2", 2, (DEMO_SD_FWID,))
    paths = directory / "previous.zip", directory / "update.zip"
    write_package(paths[0], [app_v1], hw_version=HW_VERSION, private_key=key)
    write_package(paths[1], [softdevice, app_v2], hw_version=HW_VERSION, private_key=key)
    public_key = key.public_key() if key else None
    return Firmware(load_package(paths[0]), load_package(paths[1]), public_key)


@dataclass(frozen=True)
class Outcome:
    kind: str
    profile: Profile
    result: str
    """``success``, ``clean-failure`` or ``brick``."""
    fault: str = ""
    error: str = ""
    recovered: bool = False
    """A clean failure's next, fault-free run succeeded."""
    bytes_resent: int = 0
    """The run after a killed host CREATE-d the interrupted image's init packet again."""


@dataclass
class Cell:
    """The outcomes of one fault kind on one profile."""

    kind: str
    profile: Profile
    outcomes: list[Outcome] = field(default_factory=list)

    def count(self, result: str) -> int:
        return sum(o.result == result for o in self.outcomes)

    @property
    def recovered(self) -> int:
        return sum(o.recovered for o in self.outcomes)

    @property
    def bytes_resent(self) -> int:
        return sum(o.bytes_resent for o in self.outcomes)

    @property
    def errors(self) -> Counter[str]:
        return Counter(o.error for o in self.outcomes if o.error)


def memory_connector(device: VirtualNrf52) -> Connector:
    """The device's in-memory UART, opened afresh on every call as a serial port is."""

    async def connect() -> DfuClient:
        _, protocol = await memory.connect(device, DfuLink)
        return DfuClient(protocol, timeouts=TIMEOUTS)

    return connect


async def update(device: VirtualNrf52, package: DfuPackage, connect: Connector) -> list[ImageSent]:
    """One `flash`-like run (PRN 1 pacing when the host ignores CTS); returns the images sent."""
    paced = not device.flow_control
    options = Options(prn=1 if paced else 0, flow_control=not paced)
    run = UpdateRun(package, connect, options)
    return [event async for event in run.events() if isinstance(event, ImageSent)]


def installed(device: VirtualNrf52, firmware: Firmware) -> bool:
    """The device validated the exact SHA-256 of every image of the update and runs a valid application."""
    validated = {(r.kind, r.sha256) for r in device.bootloader.flash.images}
    wanted = {(image_kind(i.kind), i.sha256.hex()) for i in firmware.update.images}
    return wanted <= validated and device.bootloader.app_valid


def firmware_bytes(device: VirtualNrf52) -> int:
    """Firmware bytes the device wrote to flash since it was created."""
    return sum(device.stats.image_bytes.values())


def update_size(firmware: Firmware) -> int:
    return sum(image.size for image in firmware.update.images)


async def settled(device: VirtualNrf52) -> None:
    """After its last reply the bootloader still writes its settings (182 ms with flash timing), then
    resets and activates the image while it boots: judge the device after that."""
    await asyncio.sleep(SETTLE)
    await device.until_booted()


async def classify(
    device: VirtualNrf52,
    firmware: Firmware,
    *,
    kind: str,
    profile: Profile,
    fault: str,
    error: str,
    resent: int,
    again: Callable[[], Awaitable[object]],
) -> Outcome:
    """Judge the device once it has settled; after a clean failure, ``again`` is the next, fault-free
    run, and the device is judged once more."""
    await settled(device)
    if installed(device, firmware) and not error:
        return Outcome(kind, profile, "success", fault, bytes_resent=resent)
    if not device.bootloader.app_valid and not installed(device, firmware):
        return Outcome(kind, profile, "brick", fault, error or "no error reported", bytes_resent=resent)
    with contextlib.suppress(McuUpdaterError):
        await again()
    await settled(device)
    recovered = installed(device, firmware)
    return Outcome(kind, profile, "clean-failure", fault, error, recovered, max(0, resent))


class InMemoryRun:
    """One seeded run of one fault kind on a fresh device."""

    def __init__(
        self, kind: str, profile: Profile, firmware: Firmware, shape: Shape, rng: random.Random
    ) -> None:
        self.kind = kind
        self.profile = profile
        self.firmware = firmware
        self.shape = shape
        self.rng = rng
        self.device = VirtualNrf52(public_key=firmware.public_key, profile=profile)
        self.cables: list[memory.SimTransport] = []
        self.port_back_at = 0.0
        self.fault = ""

    def connector(self) -> Connector:
        async def connect() -> DfuClient:
            if asyncio.get_running_loop().time() < self.port_back_at:
                raise LinkError("cannot open serial port /dev/virtual: it does not exist", "plug it in")
            transport, protocol = await memory.connect(self.device, DfuLink)
            self.cables.append(transport)
            return DfuClient(protocol, timeouts=TIMEOUTS)

        return connect

    async def update(self, package: DfuPackage) -> list[ImageSent]:
        return await update(self.device, package, self.connector())

    def installed(self) -> bool:
        return installed(self.device, self.firmware)

    def firmware_bytes(self) -> int:
        return firmware_bytes(self.device)

    async def execute(self) -> Outcome:
        async with self.device:
            await self.update(self.firmware.previous)
            assert self.device.bootloader.app_valid, "the clean install of application v1 failed"
            before = self.firmware_bytes()
            error = ""
            try:
                if self.kind == "host-killed":
                    await self._kill_and_resume()
                else:
                    await self._arm()
                    await self._watched(self.update(self.firmware.update))
            except McuUpdaterError as failure:
                error = failure.message or type(failure).__name__
            resent = self.firmware_bytes() - before - update_size(self.firmware)

            async def again() -> None:
                self.device.faults = Faults()
                await self.update(self.firmware.update)

            return await classify(
                self.device,
                self.firmware,
                kind=self.kind,
                profile=self.profile,
                fault=self.fault,
                error=error,
                resent=resent,
                again=again,
            )

    async def _arm(self) -> None:
        """Set this run's fault on the device, drawn from the shape of a clean run's exchange."""
        rng, kind, device, shape = self.rng, self.kind, self.device, self.shape
        if kind.startswith("reply-"):
            action = kind.removeprefix("reply-")
            opcode, occurrence = rng.choice(shape.replies)
            seconds = rng.uniform(LONGEST_TIMEOUT + 0.05, 2.5 * LONGEST_TIMEOUT)
            fault = ReplyFault(action, opcode=opcode, occurrence=occurrence, seconds=seconds)  # type: ignore[arg-type]
            device.faults = Faults(replies=(fault,))
            self.fault = f"{action} reply {OpCode(opcode).name} #{occurrence} ({seconds:.2f} s)"
        elif kind == "byte-corrupt":
            index = rng.randrange(shape.host_bytes)
            device.faults = Faults(flip_rx=(device.stats.bytes_in + index,))
            self.fault = f"host byte {index} flipped"
        elif kind == "stall":
            after = device.stats.frames_in + rng.randrange(1, shape.frames)
            stall = Stall(after, rng.uniform(LONGEST_TIMEOUT + 0.05, 1.0))
            device.faults = Faults(stalls=(stall,))
            self.fault = f"stall {stall.seconds:.2f} s after frame {after - device.stats.frames_in}"
        elif kind == "no-flow-control":
            # A host that ignores CTS, paced by PRN 1 as `flash --no-flow-control` does, against the
            # device's real flash stalls (a byte during one overruns its UART and resets it).
            device.flow_control = False
            device.timing = Timing(baud=rng.choice((None, 1_000_000, 460_800)), flash=True)
            self.fault = f"no flow control, {device.timing.baud or 'unlimited'} baud"
        elif kind == "power-cycle":
            largest = max(image.size for image in self.firmware.update.images)
            offset = rng.randrange(1, largest)
            device.faults = Faults(power_cycle_at=offset)
            self.fault = f"power cycle at firmware offset {offset}"

    async def _watched(self, run: Awaitable[list[ImageSent]]) -> list[ImageSent]:
        """Run; for a vanishing port, unplug it at a drawn firmware offset and keep it away a while."""
        if self.kind != "port-vanish":
            return await run
        task = asyncio.ensure_future(run)
        await self._until_offset(task)
        if not task.done():
            loop = asyncio.get_running_loop()
            self.port_back_at = loop.time() + self.rng.uniform(0.0, 1.0)
            self.cables[-1].unplug(OSError(5, "Input/output error"))
        return await task

    async def _until_offset(self, task: asyncio.Future[list[ImageSent]]) -> None:
        image = self.rng.choice(self.firmware.update.images)
        kind, threshold = image_kind(image.kind), self.rng.randrange(1, image.size)
        self.fault = f"{self.kind} at {kind} offset {threshold}"
        start = self.device.stats.image_bytes[kind]
        # The device's byte count is the trigger; it has no event to wait on, so poll it finely.
        while not task.done() and self.device.stats.image_bytes[kind] - start < threshold:  # noqa: ASYNC110
            await asyncio.sleep(0.001)

    async def _kill_and_resume(self) -> None:
        """SIGKILL: the host vanishes mid-image without a goodbye; a new host resumes on the same device
        (from the device's RAM progress: its re-sent bytes show whether it did)."""
        task = asyncio.ensure_future(self.update(self.firmware.update))
        await self._until_offset(task)
        if task.done():
            await task
            return
        self.cables[-1].abort()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await self.update(self.firmware.update)


@dataclass(frozen=True)
class Shape:
    """A clean update's exchange, from which faults are drawn so that each one is reached."""

    host_bytes: int
    frames: int
    replies: tuple[tuple[int, int], ...]
    """Every non-ping reply as (opcode, occurrence); pings are left out, their number depends on timing."""


async def measure_shape(profile: Profile, firmware: Firmware) -> Shape:
    """Run one clean update and note every reply through a fault that never fires."""
    seen: list[int] = []

    def note(frame: bytes) -> bool:
        seen.append(frame[1])
        return False

    run = InMemoryRun("none", profile, firmware, Shape(0, 0, ()), random.Random(0))  # noqa: S311 - unused
    async with run.device:
        await run.update(firmware.previous)
        stats = run.device.stats
        bytes_before, frames_before = stats.bytes_in, stats.frames_in
        run.device.faults = Faults(replies=(ReplyFault("drop", match=note),))
        await run.update(firmware.update)
    counts: Counter[int] = Counter()
    replies = []
    for opcode in seen:
        counts[opcode] += 1
        if opcode != PING_OPCODE:
            replies.append((opcode, counts[opcode]))
    return Shape(stats.bytes_in - bytes_before, stats.frames_in - frames_before, tuple(replies))
