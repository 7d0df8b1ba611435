"""The virtual nRF52832 running the nRF5 SDK 15.2 serial DFU bootloader, for tests, demos and users.

``bootloader``  synchronous, I/O-free model: bytes in, effects out (replies, flash work, resets)
``uart``        the device's SLIP receiver and RX buffer pool, quirks included
``validation``  init-packet rules and the two profiles (stock SDK, Azure Sphere sample build)
``state``       what survives resets (settings page, SoftDevice) and the JSON state file
``device``      ``VirtualNrf52``: the model on the event loop with line/flash timing, timers, faults
``faults``      fault specs; ``stats``: traffic counters
``memory``      ``connect()``: an in-memory asyncio transport to the device
``pty``         ``PtyServer``: the device on a real pseudo-terminal
``cli``         ``mcu-updater simulate`` options (also ``python -m mcu_updater.sim``); ``serve`` runs it

Nothing is imported here, so that the CLI can list the simulate options without loading the model.
"""
