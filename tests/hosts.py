"""Host-side helpers for tests: our real client stack on the virtual nRF52's in-memory UART."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from functools import cache

from cryptography.hazmat.primitives.asymmetric import ec

from mcu_updater.dfu.client import DfuClient, Timeouts
from mcu_updater.dfu.keys import load_public_key
from mcu_updater.dfu.link import DfuLink
from mcu_updater.dfu.package import DfuPackage, load_package
from mcu_updater.sim import memory
from mcu_updater.sim.device import VirtualNrf52
from mcu_updater.sim.faults import LinkFaults
from mcu_updater.updater import Connector
from tests.conftest import shared_fixture

# Short enough that fault tests finish quickly, long enough for a loaded CI machine.
FAST = Timeouts(reply=0.3, execute_command=0.5, execute_data=0.3, execute_final=0.5, ping=0.1, ready=3.0)


@cache
def key_a() -> ec.EllipticCurvePublicKey:
    return load_public_key(shared_fixture("key_a_public.pem"))


def fixture_package(name: str) -> DfuPackage:
    return load_package(shared_fixture(name))


def connector(
    device: VirtualNrf52,
    *,
    chunk: int | None = None,
    link: LinkFaults | None = None,
    timeouts: Timeouts = FAST,
    on_open: Callable[[memory.SimTransport], None] | None = None,
) -> Connector:
    """A Connector opening the device's in-memory UART, as `serial_connector` opens a real one."""

    async def connect() -> DfuClient:
        transport, protocol = await memory.connect(device, DfuLink, chunk=chunk, link=link)
        if on_open is not None:
            on_open(transport)
        return DfuClient(protocol, timeouts=timeouts)

    return connect


def received_sha256(device: VirtualNrf52, kind: str) -> list[str]:
    """SHA-256 of every image of ``kind`` the device validated, oldest first."""
    return [record.sha256 for record in device.bootloader.flash.images if record.kind == kind]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
