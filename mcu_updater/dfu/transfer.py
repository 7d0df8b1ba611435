"""Send one image (init packet + firmware) as DFU objects, resuming from whatever the device holds.

Every attempt starts by asking the device where it is (SELECT), so a retry after a timeout, a CRC
mismatch or a device reset is the same code path as a resume after a restart:

* command object: if the device already holds exactly our init packet, EXECUTE it again (accepted
  without re-validation); if it holds a prefix of it, send the rest; otherwise CREATE and send it all.
* data object: continue from the device's offset when its CRC matches ours (finishing a partial object
  in place, or EXECUTE-ing a complete one); otherwise go back to the start of the unexecuted object,
  where a CREATE rolls the device back too.

Retries are bounded per object: the count resets whenever an object is committed.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Final

from mcu_updater.dfu.client import PAGE_SIZE, DfuClient
from mcu_updater.dfu.wire import ObjectType, ResultCode, write_chunk_size
from mcu_updater.errors import (
    DeviceRejectedError,
    PackageError,
    ProtocolError,
    TransientError,
)

DEFAULT_RETRIES: Final = 4
_DAMAGED_OR_FOREIGN: Final = (
    "check the serial line (a reply damaged on the way is asked again); if it repeats, check that the "
    "target runs an SDK 15.2 serial bootloader"
)


@dataclass(frozen=True)
class Progress:
    """One step of an image transfer, as yielded to the caller."""

    image: str
    phase: str
    """``init`` (init packet accepted), ``data`` (an object committed) or ``done`` (last EXECUTE)."""
    offset: int
    total: int
    objects_done: int
    objects_total: int
    elapsed: float
    bytes_resent: int
    retries: int

    @property
    def fraction(self) -> float:
        return self.offset / self.total if self.total else 1.0

    @property
    def throughput(self) -> float:
        """Firmware bytes per second sent in this transfer so far (committed bytes only)."""
        return self.offset / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        rate = self.throughput
        return (self.total - self.offset) / rate if rate > 0 else None


def _is_transient(error: Exception) -> bool:
    if isinstance(error, InitPacketRejectedError):
        # Only an incomplete init packet (bytes lost on the way) is worth sending again, or a reply
        # the bootloader never sends (INVALID, 0x00): that one was damaged on the line.
        return error.result in (
            ResultCode.OPERATION_NOT_PERMITTED,
            ResultCode.INVALID_PARAMETER,
            ResultCode.INVALID,
        )
    # Every other request we make is valid by construction (the package was validated), so a device
    # refusal there means the request or its reply was damaged on the line, or the device reset.
    return isinstance(error, TransientError | ProtocolError | DeviceRejectedError)


class InitPacketRejectedError(DeviceRejectedError):
    """The device validated our init packet and said no (signature, versions, hardware...)."""


class ImageTransfer:
    """The object algorithm for one image over a connected client."""

    def __init__(
        self,
        client: DfuClient,
        name: str,
        init_packet: bytes,
        firmware: bytes,
        *,
        mtu: int,
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        if not firmware:
            raise PackageError(f"{name}: the firmware image is empty", "rebuild the package")
        self.client = client
        self.name = name
        self.init_packet = init_packet
        self.firmware = firmware
        self.chunk = write_chunk_size(mtu)
        self.retries = retries
        self.bytes_resent = 0
        self.retry_count = 0
        self._object_size = 0
        self._high_water = 0
        self._started = 0.0

    async def run(self) -> AsyncIterator[Progress]:
        """Send the image; yields progress after the init packet and after every object."""
        # Run again after a reconnection, the transfer keeps its clock, like its counters.
        self._started = self._started or time.monotonic()
        failures = 0
        while True:
            try:
                async for progress in self._attempt():
                    if progress.phase == "data":
                        failures = 0
                    yield progress
            except Exception as error:
                if not _is_transient(error):
                    raise
                failures += 1
                self.retry_count += 1
                if failures > self.retries:
                    raise TransientError(
                        f"{self.name}: gave up after {self.retries} retries at one object ({error})",
                        "check the serial line (cable, baud rate, flow control) and run the update "
                        "again: it resumes where it stopped",
                    ) from error
                continue
            return

    def _progress(self, phase: str, offset: int) -> Progress:
        size = self._object_size or 4096
        return Progress(
            image=self.name,
            phase=phase,
            offset=offset,
            total=len(self.firmware),
            objects_done=-(-offset // size),
            objects_total=-(-len(self.firmware) // size),
            elapsed=time.monotonic() - self._started,
            bytes_resent=self.bytes_resent,
            retries=self.retry_count,
        )

    async def _attempt(self) -> AsyncIterator[Progress]:
        await self._send_init_packet()
        yield self._progress("init", 0)
        async for progress in self._send_firmware():
            yield progress

    async def _send_init_packet(self, *, fresh: bool = False) -> None:
        """Make the device hold our accepted init packet; ``fresh`` also clears its data progress."""
        client, dat = self.client, self.init_packet
        selected = await client.select(ObjectType.COMMAND)
        if len(dat) > selected.max_size:
            # The package was validated against the SDK's 256-byte limit: a smaller one is no SDK 15.2 answer.
            raise ProtocolError(
                f"{self.name}: the device accepts init packets of {selected.max_size} bytes; this one is "
                f"{len(dat)}",
                _DAMAGED_OR_FOREIGN,
            )
        offset = selected.offset
        if fresh or not (0 < offset <= len(dat) and selected.crc == zlib.crc32(dat[:offset])):
            await client.create(ObjectType.COMMAND, len(dat))
            offset = 0
        await self._stream(dat, offset, len(dat))
        await self._check_crc(dat, len(dat))
        try:
            await client.execute(client.timeouts.execute_command)
        except DeviceRejectedError as error:
            raise InitPacketRejectedError(
                error.message, error.hint, opcode=error.opcode, result=error.result, ext=error.ext
            ) from None

    async def _send_firmware(self) -> AsyncIterator[Progress]:
        client, fw = self.client, self.firmware
        selected = await client.select(ObjectType.DATA)
        size = selected.max_size
        # Data objects are flash pages: any other size (a damaged reply) would divide by zero or cut
        # words in half below.
        if not (0 < size <= PAGE_SIZE and size % 4 == 0):
            raise ProtocolError(
                f"{self.name}: the device reports a data object size of {size} bytes; SDK 15.2 uses "
                f"{PAGE_SIZE}",
                _DAMAGED_OR_FOREIGN,
            )
        self._object_size = size
        offset = selected.offset
        if offset > len(fw):
            # Progress for an image of another size: only a fresh init packet clears it.
            await self._send_init_packet(fresh=True)
            offset = 0
        elif offset and selected.crc == zlib.crc32(fw[:offset]):
            if offset % size and offset < len(fw):
                end = min(offset - offset % size + size, len(fw))
                await self._stream(fw, offset, end)
                offset = end
                await self._check_crc(fw, offset)
            try:
                await self._execute_data(offset)
            except DeviceRejectedError as error:
                # At a boundary the device may hold the empty object of a CREATE whose reply was lost:
                # nothing to execute there, and the CREATE below starts that object again.
                if offset == len(fw) or error.result != ResultCode.OPERATION_NOT_PERMITTED:
                    raise
            else:
                yield self._progress("done" if offset == len(fw) else "data", offset)
        elif offset:
            # Executed objects always passed our CRC check, so the bad bytes are in the object that
            # holds offset - 1 and was not executed; a CREATE there rolls the device back to its start.
            offset = (offset - 1) // size * size
        while offset < len(fw):
            end = min(offset + size, len(fw))
            await client.create(ObjectType.DATA, end - offset)
            await self._stream(fw, offset, end)
            await self._check_crc(fw, end)
            await self._execute_data(end)
            offset = end
            yield self._progress("done" if offset == len(fw) else "data", offset)

    async def _execute_data(self, end: int) -> None:
        timeouts = self.client.timeouts
        final = end == len(self.firmware)
        await self.client.execute(timeouts.execute_final if final else timeouts.execute_data)

    async def _stream(self, data: bytes, start: int, end: int) -> None:
        if data is self.firmware:
            self.bytes_resent += max(0, min(end, self._high_water) - start)
            self._high_water = max(self._high_water, end)
        chunks = [data[offset : min(offset + self.chunk, end)] for offset in range(start, end, self.chunk)]
        await self.client.write_all(chunks)

    async def _check_crc(self, data: bytes, end: int) -> None:
        reply = await self.client.crc()
        expected = zlib.crc32(data[:end])
        if reply.offset != end or reply.crc != expected:
            raise TransientError(
                f"{self.name}: the device holds {reply.offset} bytes with CRC 0x{reply.crc:08X}, "
                f"expected {end} bytes with CRC 0x{expected:08X}",
                "bytes were lost or corrupted on the line; the object is sent again",
            )
