"""Frames over an asyncio transport: SLIP in both directions, write backpressure, loss propagation.

The link knows nothing about serial ports: ``hw/serial.py`` opens a real UART, the simulator offers an
in-memory transport, and both hand the link a standard ``asyncio.Transport``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from typing import Final

from mcu_updater.dfu import slip
from mcu_updater.errors import LinkError

FrameListener = Callable[[bytes], None]
LossListener = Callable[[LinkError], None]

# Replies are at most 23 decoded bytes; anything much longer is line noise, not a reply.
MAX_REPLY_FRAME: Final = 64
CLOSE_TIMEOUT: Final = 2.0


class DfuLink(asyncio.Protocol):
    """One open connection to a bootloader, as an ``asyncio.Protocol``."""

    def __init__(self, description: str = "serial link") -> None:
        self.description = description
        self.bytes_sent = 0
        self.bytes_received = 0
        self._decoder = slip.SlipDecoder(max_frame=MAX_REPLY_FRAME)
        self._transport: asyncio.Transport | None = None
        self._on_frame: FrameListener | None = None
        self._on_loss: LossListener | None = None
        self._lost: LinkError | None = None
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._writable = asyncio.Event()
        self._writable.set()

    def listen(self, on_frame: FrameListener, on_loss: LossListener) -> None:
        self._on_frame = on_frame
        self._on_loss = on_loss

    @property
    def noise_frames(self) -> int:
        """Frames dropped by the decoder as malformed (bad escape or oversized)."""
        return self._decoder.discarded

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        self.bytes_received += len(data)
        for frame in self._decoder.feed(data):
            if self._on_frame is not None:
                self._on_frame(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._lost is None:
            reason = f": {exc}" if exc else ""
            self._lost = LinkError(
                f"{self.description} was closed{reason}",
                "check the cable and that no other program uses the port",
            )
        self._writable.set()
        if not self._closed.done():
            self._closed.set_result(None)
        if self._on_loss is not None:
            self._on_loss(self._lost)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    @property
    def is_open(self) -> bool:
        return self._lost is None and self._transport is not None

    def send(self, payload: bytes) -> None:
        """Queue one framed message; raises LinkError if the link is gone."""
        self.send_many((payload,))

    def send_many(self, payloads: Sequence[bytes]) -> None:
        """Queue several framed messages in one transport write."""
        if self._lost is not None:
            raise self._lost
        if self._transport is None:
            raise LinkError(f"{self.description} is not connected", "open the port first")
        data = b"".join(slip.encode(payload) for payload in payloads)
        self.bytes_sent += len(data)
        self._transport.write(data)

    async def drain(self) -> None:
        """Wait until the transport's write buffer is below its high-water mark."""
        await self._writable.wait()
        if self._lost is not None:
            raise self._lost

    async def close(self) -> None:
        """Close the transport and wait (bounded) until it reports the loss."""
        if self._transport is not None and not self._transport.is_closing():
            self._lost = LinkError(f"{self.description} was closed by mcu-updater", "")
            self._transport.close()
        if self._transport is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._closed), CLOSE_TIMEOUT)
            if not self._closed.done():
                self._transport.abort()
