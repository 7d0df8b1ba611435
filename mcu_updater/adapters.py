"""Real adapters the commands share: a serial-port connector and package loading with a key file."""

from __future__ import annotations

from pathlib import Path

from mcu_updater.dfu.client import DfuClient, Timeouts
from mcu_updater.dfu.link import DfuLink
from mcu_updater.dfu.package import DfuPackage, load_package
from mcu_updater.hw.serial import open_serial
from mcu_updater.updater import Connector


def serial_connector(port: str, baud: int, flow_control: bool, timeouts: Timeouts | None = None) -> Connector:
    """Open ``port`` afresh on every call (the bootloader resets between images)."""

    async def connect() -> DfuClient:
        _, link = await open_serial(
            port, lambda: DfuLink(f"serial port {port}"), baud=baud, flow_control=flow_control
        )
        assert isinstance(link, DfuLink)
        return DfuClient(link, baud=baud, timeouts=timeouts)

    return connect


def load_validated_package(path: Path, public_key_path: Path | None, hw_version: int | None) -> DfuPackage:
    """Load and fully validate; a key file makes signatures mandatory and verified."""
    public_key = None
    if public_key_path is not None:
        # Without a key, flashing never loads the cryptography library.
        from mcu_updater.dfu.keys import load_public_key  # noqa: PLC0415

        public_key = load_public_key(public_key_path)
    return load_package(
        path, public_key=public_key, require_signature=public_key is not None, hw_version=hw_version
    )
