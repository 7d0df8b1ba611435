"""The pty server with real serial clients: pyserial, serial_asyncio_fast, and a raw descriptor."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import serial
import serial_asyncio_fast

from mcu_updater.dfu.slip import encode
from mcu_updater.errors import LinkError
from mcu_updater.sim.device import Timing, VirtualNrf52
from mcu_updater.sim.faults import Faults, ReplyFault
from mcu_updater.sim.pty import PtyServer
from tests.sim.helpers import h, serial_request

pytestmark = pytest.mark.timeout(30)


@asynccontextmanager
async def served(link: Path | None = None, **device: Any) -> AsyncIterator[tuple[VirtualNrf52, PtyServer]]:
    device.setdefault("timing", Timing(quick_boot=0.05))
    async with VirtualNrf52(**device) as nrf, PtyServer(nrf, link=link) as server:
        await nrf.until_booted()
        yield nrf, server


def raw_exchange(path: str, frame: bytes, *, read: bool) -> bytes:
    """Open the pty without pyserial (which flushes input on open), send, maybe read, close."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    try:
        os.write(fd, encode(frame))
        if not read:
            time.sleep(0.1)
            return b""
        data = b""
        while not data.endswith(b"\xc0"):
            data += os.read(fd, 64)
        return data
    finally:
        os.close(fd)


async def test_pyserial_reopens_across_a_device_reset() -> None:
    def host(path: str) -> list[bytes]:
        got: list[bytes] = []
        for ping in range(3):
            with serial.Serial(path, 115200, timeout=0.5, rtscts=True) as port:
                got.append(serial_request(port, bytes([0x09, ping])))
        with serial.Serial(path, 115200, timeout=0.3) as port:
            port.write(encode(h("0C")))
            got.append(serial_request(port, h("09 10")))  # deaf while it boots
            time.sleep(0.1)
            got.append(serial_request(port, h("09 11")))
        return got

    async with served() as (nrf, server):
        got = await asyncio.to_thread(host, server.path)
    assert got == [h("60 09 01 00"), h("60 09 01 01"), h("60 09 01 02"), b"", h("60 09 01 11")]
    assert nrf.stats.resets == {"abort": 1}


async def test_serial_asyncio_fast_client() -> None:
    async with served() as (_, server):
        reader, writer = await serial_asyncio_fast.open_serial_connection(url=server.path, baudrate=115200)
        try:
            writer.write(encode(h("07")))
            assert await asyncio.wait_for(reader.readuntil(b"\xc0"), 2) == h("60 07 01 83 00 C0")
        finally:
            writer.close()
            await asyncio.sleep(0.05)


async def test_replies_left_unread_by_a_closed_host_are_discarded() -> None:
    async with served() as (nrf, server):
        await asyncio.to_thread(raw_exchange, server.path, h("09 01"), read=False)
        await asyncio.sleep(0.1)
        assert await asyncio.to_thread(raw_exchange, server.path, h("09 02"), read=True) == h(
            "60 09 01 02 C0"
        )
        assert nrf.stats.bytes_discarded == 5


async def test_replies_sent_while_no_host_is_open_are_discarded() -> None:
    late = Faults(replies=(ReplyFault("delay", opcode=0x09, occurrence=1, seconds=0.2),))
    async with served(faults=late) as (nrf, server):
        fd = os.open(server.path, os.O_RDWR | os.O_NOCTTY)
        os.write(fd, encode(h("09 01")))
        await asyncio.sleep(0.05)
        os.close(fd)
        await asyncio.sleep(0.3)
        assert nrf.stats.bytes_discarded == 5
        assert await asyncio.to_thread(raw_exchange, server.path, h("09 02"), read=True) == h(
            "60 09 01 02 C0"
        )


async def test_link_is_created_and_removed(tmp_path: Path) -> None:
    link = tmp_path / "ttyNRF"
    async with served(link=link) as (_, server):
        assert os.readlink(link) == server.path
        with serial.Serial(str(link), 115200, timeout=1) as port:
            assert await asyncio.to_thread(serial_request, port, h("09 05")) == h("60 09 01 05")
    assert not link.exists()
    assert not link.is_symlink()


async def test_link_over_a_regular_file_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "taken"
    link.write_text("keep me")
    async with VirtualNrf52() as nrf:
        with pytest.raises(LinkError, match="taken"):
            PtyServer(nrf, link=link).start()
    assert link.read_text() == "keep me"
