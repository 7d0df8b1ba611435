"""Counters of everything that crossed the virtual nRF52's UART, for tests and the simulate summary."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Stats:
    """What the device saw and did since it was created (survives its resets, unlike its RAM)."""

    bytes_in: int = 0
    """Raw bytes the host sent, whatever became of them."""
    bytes_out: int = 0
    """Raw bytes the device transmitted (after reply faults)."""
    bytes_lost: int = 0
    """Host bytes that arrived while the device was resetting or booting, or overran its FIFO."""
    bytes_ignored: int = 0
    """Host bytes that arrived while the application ran (it does not speak DFU)."""
    bytes_discarded: int = 0
    """Device bytes nobody could read: no host connected, or flushed when the host closed the port."""
    frames_in: int = 0
    """Frames the bootloader dispatched (empty and replayed ones included)."""
    frames_out: int = 0
    resets: Counter[str] = field(default_factory=Counter)
    """Resets by reason (``abort``, ``dfu-complete``, ``inactivity``, ``uart-error``, ...)."""
    objects_created: Counter[str] = field(default_factory=Counter)
    """Successful CREATEs by object type (``command``, ``data``)."""
    init_executes: int = 0
    """Init packets accepted at EXECUTE, a resumed one (SELECT + EXECUTE, no CREATE) included."""
    image_bytes: Counter[str] = field(default_factory=Counter)
    """Firmware bytes written to flash, by image kind; minus the image size = bytes re-sent."""

    @property
    def reset_count(self) -> int:
        return sum(self.resets.values())
