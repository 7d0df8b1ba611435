"""The bootloader's receive path: SLIP decoding into a small pool of RX buffers.

Models ``slip.c`` and ``nrf_dfu_serial_uart.c`` of SDK 15.2 rather than a correct decoder
(``mcu_updater.dfu.slip`` is the correct one): an END completes a frame even when nothing was decoded,
and the frame is then parsed at fixed offsets of a recycled buffer, so a lone END replays the previous
request; a bad escape drops bytes up to and including the next END; and once 131 bytes are buffered every
further byte, END included, is refused until the device resets.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

from mcu_updater.dfu.slip import END, ESC, ESC_END, ESC_ESC
from mcu_updater.dfu.wire import OpCode

MTU: Final = 131
"""UART_SLIP_MTU = 2 * (64 + 1) + 1: the decoded-length limit (and what MTU_GET reports)."""

# Frames are decoded at offset 3 of each pool block so the payload after the opcode is word aligned.
# A real block is 132 bytes, so the 130th and 131st decoded bytes spill into the next block's unused
# header; the model gives each block room for them instead.
_DATA_OFFSET: Final = 3
_POOL_BLOCKS: Final = 3  # NRF_DFU_SERIAL_UART_RX_BUFFERS


class _SlipState(enum.Enum):
    DECODING = enum.auto()
    ESC_RECEIVED = enum.auto()
    CLEARING = enum.auto()


@dataclass(frozen=True)
class Frame:
    """A dispatched frame: the whole buffer from the opcode on, and how many bytes were decoded."""

    buffer: bytes
    length: int

    @property
    def opcode(self) -> int:
        return self.buffer[0]

    def u8(self, offset: int) -> int:
        return self.buffer[offset]

    def u16(self, offset: int) -> int:
        return int(struct.unpack_from("<H", self.buffer, offset)[0])

    def u32(self, offset: int) -> int:
        return int(struct.unpack_from("<I", self.buffer, offset)[0])

    @property
    def write_length(self) -> int:
        """WRITE payload length as the transport computes it: a u16, so an empty frame gives 65535."""
        return (self.length - 1) & 0xFFFF


class UartReceiver:
    """Byte-at-a-time SLIP decoder over a LIFO pool of RX buffers, as the device runs it."""

    def __init__(self) -> None:
        self._blocks = [bytearray(_DATA_OFFSET + MTU) for _ in range(_POOL_BLOCKS)]
        self._free = list(range(_POOL_BLOCKS))
        self._current = self._free.pop()
        self._index = 0
        self._state = _SlipState.DECODING

    @property
    def wedged(self) -> bool:
        """True once the buffer is full: nothing but a reset revives the receiver."""
        return self._index >= MTU

    def add(self, byte: int) -> Frame | None:
        """Feed one received byte; returns the frame it completes, if any."""
        if self._index >= MTU:
            return None
        if self._state is _SlipState.DECODING:
            if byte == END:
                return self._dispatch()
            if byte == ESC:
                self._state = _SlipState.ESC_RECEIVED
            else:
                self._store(byte)
        elif self._state is _SlipState.ESC_RECEIVED:
            if byte in (ESC_END, ESC_ESC):
                self._store(END if byte == ESC_END else ESC)
                self._state = _SlipState.DECODING
            else:
                self._state = _SlipState.CLEARING
        elif byte == END:
            self._state = _SlipState.DECODING
            self._index = 0
        return None

    def _store(self, byte: int) -> None:
        self._blocks[self._current][_DATA_OFFSET + self._index] = byte
        self._index += 1

    def _dispatch(self) -> Frame:
        frame = Frame(bytes(self._blocks[self._current][_DATA_OFFSET:]), self._index)
        done = self._current
        if frame.opcode == OpCode.WRITE:
            # A WRITE buffer is freed by the flash callback, after the ISR has allocated the next one.
            self._current = self._free.pop()
            self._free.append(done)
        else:
            self._free.append(done)
            self._current = self._free.pop()
        self._index = 0
        self._state = _SlipState.DECODING
        return frame
