"""One update run against a target already in its bootloader: inventory → plan → one session per image.

The run is an async iterator of events (the CLI renders them as a progress bar, plain lines or
NDJSON; the daemon will turn them into journal entries and sd_notify STATUS). Each image gets its own
connection: after its last EXECUTE the bootloader resets and activates it (seconds for a SoftDevice),
so the next session pings until the bootloader answers instead of sleeping a fixed time, and reads
the inventory again because a SoftDevice update can invalidate the application.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from mcu_updater.dfu import wire
from mcu_updater.dfu.client import DfuClient
from mcu_updater.dfu.initpacket import FwType
from mcu_updater.dfu.package import DfuPackage, Image
from mcu_updater.dfu.transfer import ImageTransfer, Progress
from mcu_updater.dfu.wire import ImageType, ResultCode
from mcu_updater.errors import (
    DeviceRejectedError,
    LinkError,
    McuUpdaterError,
    PolicyRefusedError,
    ProtocolError,
    TransientError,
)

Connector = Callable[[], Awaitable[DfuClient]]
"""Opens the port and returns a client on it; the run closes ``client.link`` when done."""

MAX_INVENTORY_ENTRIES: Final = 8
REOPEN_INTERVAL: Final = 0.2
T = TypeVar("T")

# The bootloader reports a SoftDevice's version, but sd_req speaks FWIDs (nrfutil's table, S132 6.x).
KNOWN_SOFTDEVICE_FWIDS: Final = {6000000: 0xA8, 6001000: 0xAF, 6001001: 0xB7}


@dataclass(frozen=True)
class InstalledImage:
    image_type: int
    version: int
    address: int
    length: int

    @property
    def kind(self) -> str:
        known = self.image_type in ImageType._value2member_map_
        return ImageType(self.image_type).name.lower() if known else "unknown"


@dataclass(frozen=True)
class Inventory:
    """What FIRMWARE_VERSION reports; ``known`` is False on bootloaders without that request."""

    images: tuple[InstalledImage, ...] = ()
    known: bool = True

    def find(self, image_type: ImageType) -> InstalledImage | None:
        return next((i for i in self.images if i.image_type == image_type), None)


class Action(enum.StrEnum):
    INSTALL = "install"
    UPDATE = "update"
    SKIP = "skip"


@dataclass(frozen=True)
class PlanItem:
    image: Image
    action: Action
    reason: str


@dataclass(frozen=True)
class Options:
    force: bool = False
    prn: int = 0
    retries: int = 4
    hw_version: int | None = None
    abort_when_idle: bool = False
    """With nothing to send, ABORT: the bootloader resets and boots a valid application at once."""
    flow_control: bool = True
    """False: the device cannot hold us off with CTS, so stay silent while it writes its settings."""
    allow_downgrade: bool = True
    """False: refuse, before sending, an image older than the one the device runs."""


# --- events --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Connected:
    seconds: float
    mtu: int


@dataclass(frozen=True)
class InventoryRead:
    inventory: Inventory


@dataclass(frozen=True)
class Planned:
    items: tuple[PlanItem, ...]


@dataclass(frozen=True)
class ImageStarted:
    image: Image


@dataclass(frozen=True)
class ImageProgress:
    progress: Progress


@dataclass(frozen=True)
class ImageSent:
    image: Image
    seconds: float
    bytes_resent: int
    retries: int


@dataclass(frozen=True)
class Activated:
    image: Image
    seconds: float


@dataclass(frozen=True)
class Finished:
    sent: tuple[ImageSent, ...]
    skipped: tuple[PlanItem, ...]
    seconds: float
    firmware_bytes: int = 0


Event = Connected | InventoryRead | Planned | ImageStarted | ImageProgress | ImageSent | Activated | Finished


# --- inventory and plan --------------------------------------------------------------------------


async def read_inventory(client: DfuClient) -> Inventory:
    images: list[InstalledImage] = []
    for index in range(MAX_INVENTORY_ENTRIES):
        try:
            reply = await client.fw_version(index)
        except DeviceRejectedError as error:
            if error.result == ResultCode.OP_CODE_NOT_SUPPORTED:
                return Inventory(known=False)
            raise
        if reply.image_type == ImageType.UNKNOWN:
            break
        images.append(InstalledImage(reply.image_type, reply.version, reply.address, reply.length))
    return Inventory(tuple(images))


def plan(package: DfuPackage, inventory: Inventory, *, force: bool = False) -> tuple[PlanItem, ...]:
    """Decide per image: install, update, or skip because the same image is already there."""
    items = []
    app = next((i for i in package.images if i.kind == FwType.APPLICATION), None)
    for image in package.images:
        installed = _installed_counterpart(image, inventory)
        if installed is None:
            action, reason = Action.INSTALL, "not on the device"
        else:
            same, reason = _is_installed(image, installed, app)
            action = Action.SKIP if same else Action.UPDATE
        if not inventory.known:
            action, reason = Action.INSTALL, "the bootloader does not report its inventory"
        if force and action == Action.SKIP:
            action, reason = Action.UPDATE, f"{reason}; sent anyway (--force)"
        items.append(PlanItem(image, action, reason))
    return tuple(items)


def refuse_downgrades(items: Sequence[PlanItem], inventory: Inventory) -> None:
    """The downgrade policy: nothing older than what the device runs is sent."""
    for item in items:
        installed = _installed_counterpart(item.image, inventory)
        wanted = item.image.softdevice.version if item.image.softdevice else item.image.version
        if item.action == Action.SKIP or installed is None or wanted is None:
            continue
        if wanted < installed.version:
            raise PolicyRefusedError(
                f"{item.image.label} is older than the {installed.kind} the device runs "
                f"({installed.version}); the downgrade policy is deny",
                "set policy.downgrade: allow to roll back (e.g. after a root filesystem rollback)",
            )


def _installed_counterpart(image: Image, inventory: Inventory) -> InstalledImage | None:
    kinds = {
        FwType.APPLICATION: ImageType.APPLICATION,
        FwType.SOFTDEVICE: ImageType.SOFTDEVICE,
        FwType.BOOTLOADER: ImageType.BOOTLOADER,
        FwType.SOFTDEVICE_BOOTLOADER: ImageType.SOFTDEVICE,
    }
    return inventory.find(kinds[image.kind])


def _is_installed(image: Image, installed: InstalledImage, app: Image | None) -> tuple[bool, str]:
    if image.kind == FwType.APPLICATION:
        same = installed.version == image.version and installed.length == image.size
        return same, f"device runs application v{installed.version} ({installed.length} B)"
    if image.kind == FwType.BOOTLOADER:
        newer = image.version is not None and installed.version >= image.version
        return newer, f"device runs bootloader v{installed.version}"
    sd = image.softdevice
    assert sd is not None
    same = installed.version == sd.version
    if same and app is not None:
        # Skipping the SoftDevice only helps if the application will then accept the one installed.
        same = sd.fwid in app.init.command.sd_req
    return same, f"device runs SoftDevice {installed.version}"


# --- the run -------------------------------------------------------------------------------------


class UpdateRun:
    """Flash a validated package: yields events; raises the first non-retryable error."""

    def __init__(self, package: DfuPackage, connect: Connector, options: Options | None = None) -> None:
        self.package = package
        self.connect = connect
        self.options = options or Options()

    async def events(self) -> AsyncIterator[Event]:
        started = time.monotonic()
        client = await self._open()
        try:
            ready = await client.wait_ready()
            await self._ask(client.set_prn, self.options.prn)
            mtu = await self._ask(client.mtu)
            yield Connected(ready, mtu)
            inventory = await self._ask(read_inventory, client)
            yield InventoryRead(inventory)
            items = plan(self.package, inventory, force=self.options.force)
            yield Planned(items)
            if not self.options.allow_downgrade:
                refuse_downgrades(items, inventory)
            to_send = [item for item in items if item.action != Action.SKIP]
            if not to_send and self.options.abort_when_idle:
                await client.abort()
            sent: list[ImageSent] = []
            for position, item in enumerate(to_send):
                if position:
                    previous = to_send[position - 1].image
                    client, seconds = await self._reopen_after(client, previous)
                    yield Activated(previous, seconds)
                    mtu = await self._ask(client.mtu)
                    inventory = await self._ask(read_inventory, client)
                    yield InventoryRead(inventory)
                yield ImageStarted(item.image)
                transfer = ImageTransfer(
                    client,
                    item.image.name,
                    item.image.init_packet,
                    item.image.firmware,
                    mtu=mtu,
                    retries=self.options.retries,
                )
                image_started = time.monotonic()
                reconnects = 0
                while True:
                    try:
                        async for progress in transfer.run():
                            yield ImageProgress(progress)
                    except DeviceRejectedError as error:
                        if await self._installed_meanwhile(client, item.image, inventory):
                            break
                        raise explain_rejection(
                            error, item.image, inventory, self.options.hw_version
                        ) from None
                    except LinkError:
                        reconnects += 1
                        if reconnects > self.options.retries:
                            raise
                        client = transfer.client = await self._reconnect(client)
                        continue
                    break
                done = ImageSent(
                    item.image, time.monotonic() - image_started, transfer.bytes_resent, transfer.retry_count
                )
                sent.append(done)
                yield done
            yield Finished(
                tuple(sent),
                tuple(item for item in items if item.action == Action.SKIP),
                time.monotonic() - started,
                sum(s.image.size for s in sent),
            )
        finally:
            await client.link.close()

    async def _ask(self, request: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Queries are harmless to repeat: one whose reply was lost or damaged on the line is asked again."""
        for attempt in itertools.count():
            try:
                return await request(*args)
            except (TransientError, ProtocolError, DeviceRejectedError):
                if attempt >= self.options.retries:
                    raise
        raise AssertionError("unreachable: the loop returns or raises")

    async def _installed_meanwhile(self, client: DfuClient, image: Image, before: Inventory) -> bool:
        """Whether the device now runs exactly ``image``, which it did not run ``before`` this session: a
        refusal can answer the retry of an image whose final EXECUTE succeeded but whose reply was lost
        (the device activated it; the reference solution's bootloader then refuses the same version)."""
        single = DfuPackage(self.package.path, (image,))
        if plan(single, before)[0].action is Action.SKIP:
            return False  # it was there already, sent with --force: the refusal is the answer
        try:
            after = await self._ask(read_inventory, client)
        except McuUpdaterError:
            return False
        return plan(single, after)[0].action is Action.SKIP

    async def _open(self) -> DfuClient:
        return await self.connect()

    async def _reconnect(self, client: DfuClient) -> DfuClient:
        """The port vanished mid-image: reopen it once it is back, so the device's RAM progress is kept."""
        await client.link.close()
        deadline = time.monotonic() + client.timeouts.ready
        while True:
            try:
                fresh = await self.connect()
            except LinkError:
                # A USB adapter re-enumerates and a pty is re-created in a moment; wait for it, briefly.
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(REOPEN_INTERVAL)
                continue
            try:
                await fresh.wait_ready()
                await self._ask(fresh.set_prn, self.options.prn)
            except BaseException:
                await fresh.link.close()
                raise
            return fresh

    async def _reopen_after(self, client: DfuClient, image: Image) -> tuple[DfuClient, float]:
        """Re-open the port once the bootloader has activated ``image`` and answers again."""
        await client.link.close()
        if not self.options.flow_control:
            await asyncio.sleep(client.timeouts.post_validation)
        fresh = await self.connect()
        try:
            seconds = await fresh.wait_ready(fresh.timeouts.activation(image.size))
            await self._ask(fresh.set_prn, self.options.prn)
        except BaseException:
            await fresh.link.close()
            raise
        return fresh, seconds


def explain_rejection(
    error: DeviceRejectedError, image: Image, inventory: Inventory, hw_version: int | None
) -> DeviceRejectedError:
    """Re-word a device refusal with what we know about the device and the package."""
    installed = _installed_counterpart(image, inventory)
    softdevice = inventory.find(ImageType.SOFTDEVICE)
    context = wire.RejectionContext(
        package_version=image.version,
        device_version=installed.version if installed else None,
        package_hw=image.init.command.hw_version,
        device_hw=hw_version,
        package_sd_req=image.init.command.sd_req,
        device_fwid=KNOWN_SOFTDEVICE_FWIDS.get(softdevice.version) if softdevice else None,
    )
    return wire.rejection_error(
        error.opcode, error.result, error.ext, subject=f"the device refused {image.label}: ", ctx=context
    )
