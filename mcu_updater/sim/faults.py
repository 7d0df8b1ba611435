"""Fault injection for the virtual nRF52: small, data-driven and deterministic.

Device faults (``Faults``) are exact: they fire on a given reply, byte index, firmware offset or frame.
Line faults (``LinkFaults``, used by the in-memory transport) are random but seeded.

A ``ReplyFault`` matches a reply when its opcode (byte 1 of ``60 OP RESULT ...``; PRN notifications are
CRC_GET replies) equals ``opcode`` (None: any) and ``match(frame)`` holds (None: always). With
``occurrence`` only the N-th match (1-based) is hit, otherwise every match. ``delay`` holds the reply
back ``seconds`` before it starts on the line (later replies queue behind it, as on a UART); ``corrupt``
XORs the last byte of the decoded reply with ``xor`` before it is SLIP-encoded.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

ReplyAction = Literal["drop", "delay", "corrupt"]


@dataclass(frozen=True)
class ReplyFault:
    """Drop, delay or corrupt the device's replies that match (see the module docstring)."""

    action: ReplyAction
    opcode: int | None = None
    occurrence: int | None = None
    match: Callable[[bytes], bool] | None = None
    seconds: float = 0.0
    xor: int = 0x01

    def matches(self, frame: bytes) -> bool:
        return (self.opcode is None or frame[1] == self.opcode) and (self.match is None or self.match(frame))


@dataclass(frozen=True)
class Stall:
    """After the device dispatched its ``after_frame``-th frame (1-based), its CPU stalls for ``seconds``."""

    after_frame: int
    seconds: float


@dataclass(frozen=True)
class Faults:
    """Everything that should go wrong on the device, each fault firing as documented on its field."""

    replies: tuple[ReplyFault, ...] = ()
    flip_rx: tuple[int, ...] = ()
    """0-based indexes in the raw host→device byte stream whose byte arrives XORed with 0x01."""
    power_cycle_at: int | None = None
    """Power-cycle once, as soon as the firmware offset reaches this many bytes."""
    stalls: tuple[Stall, ...] = ()


@dataclass(frozen=True)
class LinkFaults:
    """A noisy cable for the in-memory transport: per-byte drop/corrupt probabilities, fixed latency."""

    drop: float = 0.0
    corrupt: float = 0.0
    """Probability that a byte arrives with one random bit flipped."""
    delay: float = 0.0
    """Seconds added to every delivery."""
    seed: int = 0
    direction: Literal["both", "to_device", "to_host"] = "both"
