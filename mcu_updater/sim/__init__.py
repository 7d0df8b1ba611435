"""The virtual nRF52832 running the nRF5 SDK 15.2 serial DFU bootloader, for tests, demos and users.

``bootloader``  synchronous, I/O-free model: bytes in, effects out (replies, flash work, resets)
``uart``        the device's SLIP receiver and RX buffer pool, quirks included
``validation``  init-packet rules and the two profiles (stock SDK, Azure Sphere sample build)
``state``       what survives resets (settings page, SoftDevice) and the JSON state file
``device``      ``VirtualNrf52``: the model on the event loop with line/flash timing, timers, faults
``faults``      fault specs; ``stats``: traffic counters
``memory``      ``connect()``: an in-memory asyncio transport to the device
``pty``         ``PtyServer``: the device on a real pseudo-terminal
``cli``         ``mcu-updater simulate`` (also ``python -m mcu_updater.sim``)
"""

from mcu_updater.sim.bootloader import Boot, Bootloader, Mode, ResetReason
from mcu_updater.sim.device import Timing, VirtualNrf52
from mcu_updater.sim.faults import Faults, LinkFaults, ReplyFault, Stall
from mcu_updater.sim.memory import SimTransport, connect
from mcu_updater.sim.pty import PtyServer
from mcu_updater.sim.state import FlashState, StateFile
from mcu_updater.sim.stats import Stats
from mcu_updater.sim.validation import Profile

__all__ = [
    "Boot",
    "Bootloader",
    "Faults",
    "FlashState",
    "LinkFaults",
    "Mode",
    "Profile",
    "PtyServer",
    "ReplyFault",
    "ResetReason",
    "SimTransport",
    "Stall",
    "StateFile",
    "Stats",
    "Timing",
    "VirtualNrf52",
    "connect",
]
