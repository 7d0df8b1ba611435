"""An in-memory serial link to a virtual nRF52, returned like ``loop.create_connection`` returns one.

The device outlives connections: a host may close and reconnect between images, as it would reopen a
serial port. Closing the transport calls ``connection_lost(None)``; ``unplug`` (a pulled cable) and the
device shutting down call it with an exception.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable
from typing import Final, TypeVar

from mcu_updater.errors import LinkError
from mcu_updater.sim.device import DelayLine, VirtualNrf52
from mcu_updater.sim.faults import LinkFaults

P = TypeVar("P", bound=asyncio.Protocol)

DEFAULT_HIGH_WATER: Final = 64 * 1024


async def connect(
    device: VirtualNrf52,
    protocol_factory: Callable[[], P],
    *,
    chunk: int | None = None,
    link: LinkFaults | None = None,
) -> tuple[SimTransport, P]:
    """Open the device's UART: ``protocol`` gets device bytes in pieces of at most ``chunk`` bytes."""
    loop = asyncio.get_running_loop()
    protocol = protocol_factory()
    transport = SimTransport(loop, device, protocol, chunk=chunk, link=link)
    device.attach(transport)
    protocol.connection_made(transport)
    return transport, protocol


class SimTransport(asyncio.Transport):
    """The host's end of the virtual UART; also the device's ``HostPort``."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        device: VirtualNrf52,
        protocol: asyncio.Protocol,
        *,
        chunk: int | None,
        link: LinkFaults | None,
    ) -> None:
        super().__init__(extra={"device": device})
        if chunk is not None and chunk < 1:
            raise ValueError("chunk must be at least 1 byte")
        self._loop = loop
        self._device = device
        self._protocol = protocol
        self._chunk = chunk
        self._link = link or LinkFaults()
        self._random = random.Random(self._link.seed)  # noqa: S311 - reproducible line noise, not crypto
        self._to_device = DelayLine(loop, device.receive)
        self._to_host = DelayLine(loop, self._hand_over)
        self._held: deque[bytes] = deque()
        self._closing = False
        self._reading = True
        self._writing_paused = False
        self._high = DEFAULT_HIGH_WATER
        self._low = DEFAULT_HIGH_WATER // 4

    # --- asyncio.Transport --------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return
        payload = self._noise(bytes(data), "to_device")
        if self._link.delay and self._applies("to_device"):
            self._to_device.put(self._loop.time() + self._link.delay, payload)
        else:
            self._device.receive(payload)
        if not self._writing_paused and self.get_write_buffer_size() > self._high:
            self._writing_paused = True
            self._protocol.pause_writing()

    def close(self) -> None:
        self._shut(None, drop_outgoing=False)

    def abort(self) -> None:
        self._shut(None, drop_outgoing=True)

    def is_closing(self) -> bool:
        return self._closing

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        if not self._reading:
            self._reading = True
            self._loop.call_soon(self._release_held)

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    def get_write_buffer_size(self) -> int:
        return self._device.backlog

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if high is None:
            high = DEFAULT_HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not 0 <= low <= high:
            raise ValueError(f"high ({high}) must be >= low ({low}) must be >= 0")
        self._high, self._low = high, low

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def can_write_eof(self) -> bool:
        return False

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        if not isinstance(protocol, asyncio.Protocol):
            raise TypeError("the virtual UART needs an asyncio.Protocol")
        self._protocol = protocol

    def unplug(self, exc: Exception | None = None) -> None:
        """Pull the cable: ``connection_lost`` gets ``exc`` (a ConnectionResetError by default)."""
        self._shut(exc or ConnectionResetError("virtual serial link unplugged"), drop_outgoing=True)

    # --- HostPort -------------------------------------------------------------------------------

    def deliver(self, data: bytes) -> None:
        payload = self._noise(data, "to_host")
        if self._link.delay and self._applies("to_host"):
            self._to_host.put(self._loop.time() + self._link.delay, payload)
        else:
            self._hand_over(payload)

    def backlog_changed(self, backlog: int) -> None:
        if self._writing_paused and backlog <= self._low:
            self._writing_paused = False
            self._protocol.resume_writing()

    def device_closed(self) -> None:
        self._shut(
            LinkError("the virtual nRF52 was switched off", "restart the simulator"), drop_outgoing=True
        )

    # --- internals ------------------------------------------------------------------------------

    def _shut(self, exc: Exception | None, *, drop_outgoing: bool) -> None:
        if self._closing:
            return
        self._closing = True
        self._device.detach(self)
        self._device.stats.bytes_discarded += self._to_host.clear() + sum(map(len, self._held))
        self._held.clear()
        if drop_outgoing:
            self._to_device.clear()
        self._loop.call_soon(self._protocol.connection_lost, exc)

    def _applies(self, direction: str) -> bool:
        return self._link.direction in ("both", direction)

    def _noise(self, data: bytes, direction: str) -> bytes:
        link = self._link
        if not (link.drop or link.corrupt) or not self._applies(direction):
            return data
        out = bytearray()
        for byte in data:
            if self._random.random() < link.drop:
                continue
            out.append(
                byte ^ (1 << self._random.randrange(8)) if self._random.random() < link.corrupt else byte
            )
        return bytes(out)

    def _hand_over(self, data: bytes) -> None:
        if self._closing:
            self._device.stats.bytes_discarded += len(data)
            return
        self._held.append(data)
        self._release_held()

    def _release_held(self) -> None:
        size = self._chunk
        while self._held and self._reading and not self._closing:
            data = self._held.popleft()
            if size is None or len(data) <= size:
                self._protocol.data_received(data)
                continue
            self._protocol.data_received(data[:size])
            self._held.appendleft(data[size:])
