"""SLIP framing (RFC 1055 byte values) as the nRF5 serial bootloader uses it. Pure code, no I/O.

The encoder never emits a leading END: on the SDK 15.2 bootloader an empty frame is dispatched with the
previous request's bytes still in the buffer, so a stray END replays that request.
"""

from __future__ import annotations

from typing import Final

END: Final = 0xC0
ESC: Final = 0xDB
ESC_END: Final = 0xDC
ESC_ESC: Final = 0xDD


def encode(payload: bytes) -> bytes:
    """Frame one message: escape END and ESC, then a single trailing END."""
    if not payload:
        raise ValueError("an empty SLIP frame replays the previous request on the bootloader")
    escaped = payload.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc")
    return escaped + b"\xc0"


class SlipDecoder:
    """Incremental decoder: feed any chunking of the byte stream, get whole frames back.

    Empty frames (back-to-back ENDs) are skipped. A frame longer than ``max_frame`` or containing an
    invalid escape is discarded up to the next END, and the decoder carries on with the frame after it;
    ``discarded`` counts such frames so callers can report line noise.
    """

    def __init__(self, max_frame: int = 512) -> None:
        self.max_frame = max_frame
        self.discarded = 0
        self._buffer = bytearray()
        self._escaped = False
        self._dropping = False

    def feed(self, data: bytes) -> list[bytes]:
        frames: list[bytes] = []
        for byte in data:
            if byte == END:
                if self._dropping or self._escaped:
                    self.discarded += 1
                elif self._buffer:
                    frames.append(bytes(self._buffer))
                self._reset()
                continue
            if self._dropping:
                continue
            decoded = byte
            if self._escaped:
                self._escaped = False
                if byte == ESC_END:
                    decoded = END
                elif byte == ESC_ESC:
                    decoded = ESC
                else:
                    self._dropping = True
                    continue
            elif byte == ESC:
                self._escaped = True
                continue
            if len(self._buffer) >= self.max_frame:
                self._dropping = True
                continue
            self._buffer.append(decoded)
        return frames

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame held so far."""
        return len(self._buffer)

    def _reset(self) -> None:
        self._buffer.clear()
        self._escaped = False
        self._dropping = False
