"""Typed requests to the bootloader with one request in flight and per-operation timeouts.

Each reply timeout is the device's worst-case work for that request plus the line time of everything
still queued ahead of the reply (a CRC request after a 4 KiB object waits behind ~4.2 KB of WRITEs).
Replies nobody waits for (late, duplicated, or to another opcode) are counted and dropped. After a
timeout the next request is preceded by a ping with a fresh id, so a late reply can never be taken
for the answer to a later request of the same opcode.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from mcu_updater.dfu import wire
from mcu_updater.dfu.link import DfuLink
from mcu_updater.dfu.wire import ObjectType, OpCode, Reply
from mcu_updater.errors import (
    LinkError,
    ProtocolError,
    ReplyTimeoutError,
    TargetNotAnsweringError,
)

BITS_PER_BYTE: Final = 10  # 8N1
PAGE_SIZE: Final = 4096


@dataclass(frozen=True)
class Timeouts:
    """Worst-case device work per request, in seconds; line time is added on top."""

    reply: float = 0.5
    """Requests the device answers at once (ping, select, CRC, MTU, versions, PRN)."""
    page_erase: float = 0.1
    """Per 4 KiB page erased by a data CREATE (nRF52832: ≤ 85 ms)."""
    execute_command: float = 2.0
    """Init-packet EXECUTE: signature verification plus settings page and backup."""
    execute_data: float = 0.5
    """Data EXECUTE of a non-final object (no flash work without progress saving)."""
    execute_final: float = 3.0
    """Final EXECUTE: SHA-256 over the whole image before the reply."""
    ping: float = 0.1
    """One ping attempt while waiting for the bootloader to boot."""
    ready: float = 10.0
    """How long to keep pinging for a bootloader that is booting or activating an image."""
    post_validation: float = 0.4
    """Silence after an image's last EXECUTE on a line without flow control: the bootloader writes its
    settings page (≈182 ms, CPU halted) after replying, and a byte then would overrun its UART and
    reset it mid-write (with RTS/CTS it simply holds the host off)."""
    activation_per_page: float = 0.2
    """Activation copies each 4 KiB page (erase + write + progress) before the bootloader answers."""

    def activation(self, image_size: int) -> float:
        """Deadline for the bootloader to answer again after an image of this size was sent."""
        pages = -(-image_size // PAGE_SIZE)
        return max(self.ready, pages * self.activation_per_page + self.ready)


@dataclass
class ClientStats:
    requests: int = 0
    timeouts: int = 0
    stray_replies: int = 0


class DfuClient:
    """The bootloader's requests as coroutines over a ``DfuLink``."""

    def __init__(self, link: DfuLink, *, baud: int = 115200, timeouts: Timeouts | None = None) -> None:
        self.link = link
        self.baud = baud
        self.timeouts = timeouts or Timeouts()
        self.stats = ClientStats()
        self.prn = 0
        self._writes_since_notification = 0
        self._lock = asyncio.Lock()
        self._waiting: tuple[int, asyncio.Future[Reply]] | None = None
        self._unanswered_bytes = 0
        self._needs_resync = False
        self._ping_ids = itertools.cycle(range(1, 256))
        self._lost: LinkError | None = None
        link.listen(self._on_frame, self._on_loss)

    # --- plumbing -----------------------------------------------------------------------------

    def _on_frame(self, frame: bytes) -> None:
        self._unanswered_bytes = 0
        try:
            reply = Reply.from_frame(frame)
        except ProtocolError:
            self.stats.stray_replies += 1
            return
        if self._waiting is not None and self._waiting[0] == reply.opcode:
            future = self._waiting[1]
            if not future.done():
                future.set_result(reply)
                return
        self.stats.stray_replies += 1

    def _on_loss(self, error: LinkError) -> None:
        self._lost = error
        if self._waiting is not None and not self._waiting[1].done():
            self._waiting[1].set_exception(error)

    def line_time(self, nbytes: int) -> float:
        return nbytes * BITS_PER_BYTE / self.baud

    async def _transact(
        self, request: wire.Request, work: float, *, expect: int | None = None, check: bool = True
    ) -> Reply:
        async with self._lock:
            if self._needs_resync and request.opcode != OpCode.PING:
                await self._resync()
            return await self._exchange(request, work, expect=expect, check=check)

    async def _exchange(
        self, request: wire.Request, work: float, *, expect: int | None = None, check: bool = True
    ) -> Reply:
        """Send one request and wait for the reply with opcode ``expect`` (default: its own)."""
        if self._lost is not None:
            raise self._lost
        payload = request.to_bytes()
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting = (request.opcode if expect is None else expect, future)
        strays_before = self.stats.stray_replies
        try:
            self.link.send(payload)
            self.stats.requests += 1
            # 2x line time: slip escaping and the reply's own bytes, with margin for UART gaps.
            self._unanswered_bytes += len(payload) + 1
            budget = work + 2 * self.line_time(self._unanswered_bytes + 32)
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
                # (SIGTERM) that arrives as the reply does, and the run would carry on.
                async with asyncio.timeout(budget):
                    reply = await future
            except TimeoutError:
                self.stats.timeouts += 1
                self._needs_resync = True
                strays = self.stats.stray_replies - strays_before
                # A device that answers garbage or another request is a different fault from a silent one.
                meanwhile = f" ({strays} malformed or unrelated replies meanwhile)" if strays else ""
                raise ReplyTimeoutError(
                    f"no reply to {OpCode(request.opcode).name} within {budget:.2f} s{meanwhile}",
                    "check the cable, baud rate and flow control; the target may have reset",
                ) from None
        finally:
            self._waiting = None
        if check and not reply.ok:
            raise wire.unknown_code_error(request.opcode, reply.result, reply.ext) or wire.rejection_error(
                request.opcode, reply.result, reply.ext
            )
        return reply

    async def _resync(self) -> None:
        """Ping with a fresh id until echoed, so replies still in flight are flushed as strays."""
        deadline = time.monotonic() + self.timeouts.ready
        while True:
            ping_id = next(self._ping_ids)
            try:
                reply = await self._exchange(wire.PingRequest(ping_id), self.timeouts.ping, check=False)
            except ReplyTimeoutError:
                if time.monotonic() > deadline:
                    raise
                continue
            if reply.payload[:1] == bytes([ping_id]):
                self._needs_resync = False
                return

    # --- requests -----------------------------------------------------------------------------

    async def ping(self, ping_id: int | None = None) -> None:
        """One ping; the echo must carry our id."""
        ping_id = next(self._ping_ids) if ping_id is None else ping_id
        async with self._lock:
            reply = await self._exchange(wire.PingRequest(ping_id), self.timeouts.ping, check=False)
            if reply.payload[:1] != bytes([ping_id]):
                self._needs_resync = True
                raise ProtocolError(
                    f"ping {ping_id} was answered with {reply.to_bytes().hex(' ')}",
                    "retry; stale replies were on the line",
                )
            self._needs_resync = False

    async def wait_ready(self, deadline: float | None = None) -> float:
        """Ping until the bootloader answers; returns the seconds it took."""
        started = time.monotonic()
        limit = started + (self.timeouts.ready if deadline is None else deadline)
        while True:
            try:
                await self.ping()
            except (ReplyTimeoutError, ProtocolError):
                if time.monotonic() >= limit:
                    raise TargetNotAnsweringError(
                        f"the bootloader did not answer a ping within {limit - started:.1f} s",
                        "check that the target is in its bootloader (DFU pin held at reset), the "
                        "port, baud rate and flow control",
                    ) from None
                continue
            return time.monotonic() - started

    async def set_prn(self, target: int) -> None:
        await self._transact(wire.SetPrnRequest(target), self.timeouts.reply)
        self.prn = target
        self._writes_since_notification = 0

    async def mtu(self) -> int:
        reply = await self._transact(wire.MtuRequest(), self.timeouts.reply)
        if len(reply.payload) < wire.MTU_LAYOUT.size:
            raise ProtocolError("truncated MTU reply from the device", "retry")
        (mtu,) = wire.MTU_LAYOUT.unpack_from(reply.payload)
        # SLIP has no checksum: a damaged reply could announce frames the receiver cannot hold, and
        # one oversized frame wedges it until it resets. Every nRF5 SDK serial bootloader says 131.
        if not wire.MIN_MTU <= mtu <= wire.SERIAL_MTU:
            raise ProtocolError(
                f"the device reports an MTU of {mtu} bytes; the nRF5 SDK serial bootloader uses "
                f"{wire.SERIAL_MTU}",
                "retry; if it persists, check the baud rate and that the target runs an SDK serial "
                "bootloader",
            )
        return int(mtu)

    async def select(self, object_type: ObjectType) -> wire.SelectReply:
        reply = await self._transact(wire.SelectRequest(object_type), self.timeouts.reply)
        return wire.SelectReply.from_payload(reply.payload)

    async def create(self, object_type: ObjectType, size: int) -> None:
        pages = -(-size // PAGE_SIZE) if object_type == ObjectType.DATA else 0
        await self._transact(
            wire.CreateRequest(object_type, size),
            self.timeouts.reply + pages * self.timeouts.page_erase,
        )
        self._writes_since_notification = 0

    async def write(self, data: bytes) -> None:
        """WRITE one chunk; with PRN set, every PRN-th write waits for its CRC notification."""
        self._writes_since_notification += 1
        if self.prn and self._writes_since_notification >= self.prn:
            self._writes_since_notification = 0
            reply = await self._transact(wire.WriteRequest(data), self.timeouts.reply, expect=OpCode.CRC_GET)
            wire.CrcReply.from_payload(reply.payload)
            return
        async with self._lock:
            if self._lost is not None:
                raise self._lost
            self.link.send(wire.WriteRequest(data).to_bytes())
            self._unanswered_bytes += len(data) + 2
        await self.link.drain()

    async def write_all(self, chunks: Sequence[bytes]) -> None:
        """WRITE several chunks; without PRN they leave in one transport write (one syscall, not one
        per frame), which is the same bytes on the wire."""
        if self.prn:
            for chunk in chunks:
                await self.write(chunk)
            return
        async with self._lock:
            if self._lost is not None:
                raise self._lost
            self.link.send_many([wire.WriteRequest(chunk).to_bytes() for chunk in chunks])
            self._unanswered_bytes += sum(len(chunk) + 2 for chunk in chunks)
        await self.link.drain()

    async def crc(self) -> wire.CrcReply:
        reply = await self._transact(wire.CrcRequest(), self.timeouts.reply)
        return wire.CrcReply.from_payload(reply.payload)

    async def execute(self, work: float) -> None:
        await self._transact(wire.ExecuteRequest(), work)

    async def fw_version(self, image_index: int) -> wire.FwVersionReply:
        reply = await self._transact(wire.FwVersionRequest(image_index), self.timeouts.reply)
        return wire.FwVersionReply.from_payload(reply.payload)

    async def hw_version(self) -> wire.HwVersionReply:
        reply = await self._transact(wire.HwVersionRequest(), self.timeouts.reply)
        return wire.HwVersionReply.from_payload(reply.payload)

    async def abort(self) -> None:
        """ABORT has no reply: the bootloader resets before it could send one."""
        async with self._lock:
            self.link.send(wire.AbortRequest().to_bytes())
            await self.link.drain()
