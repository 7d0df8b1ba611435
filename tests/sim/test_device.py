"""The device on the event loop: in-memory transport, resets, timers, timing model, faults, stats."""

from __future__ import annotations

import asyncio
import struct
import time
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from mcu_updater.dfu.slip import encode
from mcu_updater.errors import LinkError
from mcu_updater.sim.bootloader import Boot, Mode
from mcu_updater.sim.device import Timing, VirtualNrf52
from mcu_updater.sim.faults import Faults, LinkFaults, ReplyFault, Stall
from mcu_updater.sim.memory import SimTransport, connect
from mcu_updater.sim.state import Bank, BankCode, FlashState, Settings, StateFile
from tests.sim.helpers import FrameHost, h, init_command, package, packet, public_key

pytestmark = pytest.mark.timeout(30)

FAST = Timing(quick_boot=0.02)
FIRMWARE = bytes(range(256)) * 32  # 8 KiB, two objects
DAT = packet(init_command(FIRMWARE))


@asynccontextmanager
async def session(
    *, chunk: int | None = None, link: LinkFaults | None = None, **device: Any
) -> AsyncIterator[tuple[VirtualNrf52, SimTransport, FrameHost]]:
    """A booted device with one connected host."""
    device.setdefault("timing", FAST)
    async with VirtualNrf52(public_key=public_key(), **device) as nrf:
        await nrf.until_booted()
        transport, host = await connect(nrf, FrameHost, chunk=chunk, link=link)
        try:
            yield nrf, transport, host
        finally:
            transport.close()


def with_app() -> FlashState:
    settings = Settings(app_version=1)
    settings.bank_0 = Bank(BankCode.VALID_APP, 4096)
    return FlashState(settings=settings)


async def send_init(host: FrameHost, dat: bytes = DAT) -> bytes:
    assert await host.request(struct.pack("<BBI", 1, 1, len(dat))) == h("60 01 01")
    for start in range(0, len(dat), 64):
        host.send(b"\x08" + dat[start : start + 64])
    return await host.request(h("04"))


async def send_object(host: FrameHost, data: bytes) -> bytes:
    """CREATE, pipelined WRITEs, CRC, EXECUTE; the EXECUTE reply."""
    assert await host.request(struct.pack("<BBI", 1, 2, len(data))) == h("60 01 01")
    for start in range(0, len(data), 64):
        host.send(b"\x08" + data[start : start + 64])
    assert (await host.request(h("03")))[:3] == h("60 03 01")
    return await host.request(h("04"))


async def send_image(host: FrameHost, dat: bytes, firmware: bytes) -> bytes:
    assert await send_init(host, dat) == h("60 04 01")
    reply = b""
    for start in range(0, len(firmware), 4096):
        reply = await send_object(host, firmware[start : start + 4096])
    return reply


async def rtt(host: FrameHost, frame: bytes) -> float:
    started = time.monotonic()
    await host.request(frame, within=3)
    return time.monotonic() - started


# --- in-memory transport ------------------------------------------------------------------------


async def test_connect_returns_transport_and_protocol_like_create_connection() -> None:
    async with VirtualNrf52(timing=FAST) as nrf:
        await nrf.until_booted()
        transport, host = await connect(nrf, FrameHost)
        assert isinstance(transport, asyncio.Transport)
        assert host.transport is transport
        assert await host.request(h("09 2A")) == h("60 09 01 2A")
        transport.close()
        assert transport.is_closing()
        assert host.lost == []  # connection_lost comes on a later loop iteration, as in asyncio
        await asyncio.sleep(0)
        assert host.lost == [None]
        transport.write(b"ignored")
        assert nrf.stats.bytes_in == 3


async def test_device_bytes_arrive_one_at_a_time() -> None:
    async with session(chunk=1) as (_, _, host):
        assert await host.request(h("07")) == h("60 07 01 83 00")
        assert [len(c) for c in host.chunks] == [1] * 6


async def test_one_connection_at_a_time_and_the_device_outlives_it() -> None:
    async with session() as (nrf, transport, host):
        with pytest.raises(LinkError):
            await connect(nrf, FrameHost)
        assert await send_init(host) == h("60 04 01")
        assert await host.request(struct.pack("<BBI", 1, 2, 4096)) == h("60 01 01")
        host.send(b"\x08" + FIRMWARE[:64])
        await host.request(h("03"))
        transport.close()
        transport2, host2 = await connect(nrf, FrameHost)
        # RAM state survives a host reconnect: the partial object is still there.
        expected = h("60 06 01 00 10 00 00 40 00 00 00") + struct.pack("<I", zlib.crc32(FIRMWARE[:64]))
        assert await host2.request(h("06 02")) == expected
        transport2.close()


async def test_unplug_and_switch_off_report_exceptions() -> None:
    async with session() as (_, transport, host):
        transport.unplug()
        await asyncio.sleep(0)
        assert isinstance(host.lost[0], ConnectionResetError)
    async with VirtualNrf52(timing=FAST) as nrf:
        _, host = await connect(nrf, FrameHost)
    await asyncio.sleep(0)
    assert isinstance(host.lost[0], LinkError)


async def test_pause_reading_holds_device_bytes() -> None:
    async with session() as (_, transport, host):
        transport.pause_reading()
        host.send(h("09 01"))
        assert await host.silent(0.1)
        transport.resume_reading()
        assert await host.reply() == h("60 09 01 01")


async def test_write_buffer_fills_at_line_rate_and_drains() -> None:
    async with session(timing=Timing(baud=115200, quick_boot=0.02)) as (nrf, transport, host):
        transport.set_write_buffer_limits(high=200)
        assert transport.get_write_buffer_limits() == (50, 200)
        for ping in range(200):
            host.send(bytes([0x09, ping & 0x7F]))  # 600 bytes: ~52 ms on the line
        assert host.paused == 1
        assert transport.get_write_buffer_size() > 200
        for _ in range(200):
            await host.reply()
        assert host.resumed == 1
        assert transport.get_write_buffer_size() == nrf.backlog == 0


async def test_link_faults() -> None:
    async with session(link=LinkFaults(drop=1.0, direction="to_host")) as (nrf, _, host):
        host.send(h("09 01"))
        assert await host.silent()
        assert nrf.stats.frames_in == 1
    async with session(link=LinkFaults(delay=0.2)) as (_, _, host):
        assert await rtt(host, h("09 01")) >= 0.39  # both directions
    noisy: list[list[bytes]] = []
    for _ in range(2):
        async with session(link=LinkFaults(corrupt=0.3, seed=7, direction="to_host")) as (_, _, host):
            for ping in range(20):
                host.send(bytes([9, ping]))
            await asyncio.sleep(0.05)
            noisy.append(host.chunks)
    assert noisy[0] == noisy[1]
    assert b"".join(noisy[0]) != b"".join(bytes([0x60, 9, 1, ping, 0xC0]) for ping in range(20))


# --- resets and timers ------------------------------------------------------------------------------


async def test_deaf_while_booting() -> None:
    async with VirtualNrf52(timing=Timing(quick_boot=0.3)) as nrf:
        transport, host = await connect(nrf, FrameHost)
        assert nrf.mode is Mode.OFF
        host.send(h("09 01"))
        assert await host.silent(0.1)
        assert nrf.stats.bytes_lost == 3
        assert await nrf.until_booted() is Mode.DFU
        assert await host.request(h("09 02")) == h("60 09 01 02")
        transport.close()


async def test_abort_resets_without_a_reply_and_the_device_must_be_pinged_again() -> None:
    async with session(timing=Timing(quick_boot=0.2)) as (nrf, _, host):
        host.send(h("0C"))
        host.send(h("09 01"))
        assert await host.silent(0.1)
        assert nrf.stats.resets == {"abort": 1}
        await nrf.until_booted()
        assert await host.request(h("09 02")) == h("60 09 01 02")


async def test_inactivity_timeout_boots_the_valid_app() -> None:
    timing = Timing(quick_boot=0.02, inactivity=0.2)
    async with session(timing=timing, flash=with_app(), dfu_pin=False) as (nrf, _, host):
        # With a valid app and the pin released, only a fresh boot... the pin decides: it is released.
        assert nrf.mode is Mode.APP
        host.send(h("09 01"))
        assert await host.silent(0.1)
        assert nrf.stats.bytes_ignored == 3
    async with session(timing=timing, flash=with_app(), dfu_pin=True) as (nrf, _, host):
        assert nrf.mode is Mode.DFU
        nrf.dfu_pin = False
        await asyncio.sleep(0.35)
        assert nrf.stats.resets == {"inactivity": 1}
        assert await nrf.until_booted() is Mode.APP


async def test_only_init_create_and_data_execute_restart_the_inactivity_timer() -> None:
    timing = Timing(quick_boot=0.02, inactivity=0.4)
    async with session(timing=timing) as (nrf, _, host):
        await asyncio.sleep(0.25)
        await host.request(h("09 01"))
        await asyncio.sleep(0.25)
        assert nrf.stats.resets == {"inactivity": 1}
    async with session(timing=timing) as (nrf, _, host):
        await asyncio.sleep(0.25)
        await host.request(h("01 01 10 00 00 00"))
        await asyncio.sleep(0.25)
        assert nrf.stats.resets == {}
        await asyncio.sleep(0.25)
        assert nrf.stats.resets == {"inactivity": 1}


async def test_continuation_timeout_after_a_softdevice_activation() -> None:
    sd, _ = package("sd_app_signed.zip")
    timing = Timing(quick_boot=0.02, continuation=0.2)
    async with session(timing=timing, flash=with_app()) as (nrf, _, host):
        nrf.dfu_pin = False
        assert await send_image(host, sd.dat, sd.bin) == h("60 04 01")
        assert await nrf.until_booted() is Mode.DFU  # SD activated, app valid: wait for the app
        await asyncio.sleep(0.3)
        assert nrf.stats.resets == {"dfu-complete": 1, "inactivity": 1}
        assert nrf.mode is Mode.APP


async def test_power_cycle_and_pin_reset() -> None:
    async with session() as (nrf, _, _):
        nrf.power_cycle()
        nrf.reset()
        assert nrf.stats.resets == {"power-cycle": 1, "pin-reset": 1}
        assert nrf.mode is Mode.OFF


async def test_settings_writes_reach_the_state_file(tmp_path: Path) -> None:
    store = StateFile(tmp_path / "state.json")
    async with session(store=store) as (_, _, host):
        assert await send_init(host) == h("60 04 01")
        assert store.load().settings.progress.command_size == len(DAT)
        await send_object(host, FIRMWARE[:4096])
    async with session(store=store) as (_, _, host):
        assert await host.request(h("06 01")) == h("60 06 01 00 01 00 00") + struct.pack(
            "<II", len(DAT), zlib.crc32(DAT)
        )
        assert await host.request(h("06 02")) == h("60 06 01 00 10 00 00") + bytes(8)


# --- timing model -----------------------------------------------------------------------------------


async def test_line_rate_paces_both_directions() -> None:
    async with session(timing=Timing(baud=2400, quick_boot=0.02)) as (_, _, host):
        line = (3 + 5) * 10 / 2400  # ping out, reply back
        assert line <= await rtt(host, h("09 01")) < line + 0.06
        line = (3 + 16) * 10 / 2400  # SELECT and its 15-byte reply
        assert line <= await rtt(host, h("06 01")) < line + 0.06


async def test_flash_timing_stalls_create_and_execute() -> None:
    async with session(timing=Timing(flash=True, quick_boot=0.02)) as (_, _, host):
        assert await host.request(struct.pack("<BBI", 1, 1, len(DAT))) == h("60 01 01")
        for start in range(0, len(DAT), 64):
            host.send(b"\x08" + DAT[start : start + 64])
        assert 0.182 <= await rtt(host, h("04")) < 0.3  # settings page + backup before the reply
        assert 0.085 <= await rtt(host, h("01 02 00 10 00 00")) < 0.2  # one page erased first


def test_boot_times_follow_the_activation_work() -> None:
    flash = Timing(flash=True)
    app = Boot(Mode.DFU, False, "application", copied_pages=15, settings_writes=3, boots=2)
    assert flash.boot_time(app) == pytest.approx(2.9, abs=0.05)
    softdevice = Boot(Mode.DFU, True, "softdevice", copied_pages=9, settings_writes=3, boots=1)
    assert flash.boot_time(softdevice) == pytest.approx(1.97, abs=0.05)
    assert Timing().boot_time(app) == 0.08


async def test_flow_control_holds_the_host_once_the_uarte_fifo_is_full() -> None:
    timing = Timing(baud=115200, flash=True, quick_boot=0.02)
    async with session(timing=timing) as (_, _, host):
        assert await send_init(host) == h("60 04 01")
        assert await host.request(struct.pack("<BBI", 1, 2, 4096)) == h("60 01 01")
        frames = [encode(b"\x08" + FIRMWARE[start : start + 64]) for start in range(0, 4096, 64)]
        line = (sum(map(len, frames)) + 2 + 11) * 10 / 115200  # the WRITEs, CRC_GET and its reply
        # Each write stalls the CPU 16 words x 67.5 us; the FIFO takes 4 bytes of it, the host waits the rest.
        stalls = 64 * (16 * 67.5e-6 - 4 * 10 / 115200)
        started = time.monotonic()
        assert host.transport is not None
        host.transport.write(b"".join(frames))
        assert (await host.request(h("03"), within=3))[3:7] == struct.pack("<I", 4096)
        assert line + stalls - 0.005 <= time.monotonic() - started < line + stalls + 0.25


@pytest.mark.parametrize("flow_control", [True, False])
async def test_write_stalls_overrun_the_uart_without_flow_control(flow_control: bool) -> None:
    timing = Timing(baud=115200, flash=True, quick_boot=0.02)
    async with session(timing=timing, flow_control=flow_control) as (nrf, _, host):
        assert await send_init(host) == h("60 04 01")
        assert await host.request(struct.pack("<BBI", 1, 2, 4096)) == h("60 01 01")
        host.send(b"\x08" + FIRMWARE[:64])
        host.send(b"\x08" + FIRMWARE[64:128])
        if flow_control:
            assert await host.request(h("03")) == h("60 03 01 80 00 00 00") + struct.pack(
                "<I", zlib.crc32(FIRMWARE[:128])
            )
            assert nrf.stats.resets == {}
        else:
            host.send(h("03"))
            assert await host.silent(0.2)
            assert nrf.stats.resets == {"uart-error": 1}


# --- fault injection --------------------------------------------------------------------------------


async def test_drop_the_nth_reply_of_an_opcode() -> None:
    async with session(faults=Faults(replies=(ReplyFault("drop", opcode=0x09, occurrence=2),))) as (
        _,
        _,
        host,
    ):
        assert await host.request(h("09 01")) == h("60 09 01 01")
        host.send(h("09 02"))
        assert await host.silent()
        assert await host.request(h("09 03")) == h("60 09 01 03")


async def test_delay_a_reply_keeps_the_order() -> None:
    fault = ReplyFault("delay", opcode=0x09, occurrence=1, seconds=0.3)
    async with session(faults=Faults(replies=(fault,))) as (_, _, host):
        started = time.monotonic()
        host.send(h("09 01"))
        host.send(h("07"))
        assert await host.reply() == h("60 09 01 01")
        assert await host.reply() == h("60 07 01 83 00")
        assert time.monotonic() - started >= 0.3


async def test_corrupt_a_reply_and_match_by_predicate() -> None:
    faults = Faults(
        replies=(
            ReplyFault("corrupt", opcode=0x07, xor=0xFF),
            ReplyFault("drop", match=lambda frame: frame[2] != 0x01),
        )
    )
    async with session(faults=faults) as (_, _, host):
        assert await host.request(h("07")) == h("60 07 01 83 FF")
        assert await host.request(h("07")) == h("60 07 01 83 FF")
        host.send(h("05"))  # 60 05 02: an error, dropped
        assert await host.silent()


async def test_flip_a_received_byte() -> None:
    async with session(faults=Faults(flip_rx=(4,))) as (_, _, host):
        assert await host.request(h("09 10")) == h("60 09 01 10")
        assert await host.request(h("09 10")) == h("60 09 01 11")  # byte 4 of the stream: the second id


async def test_power_cycle_at_a_firmware_offset() -> None:
    async with session(faults=Faults(power_cycle_at=4096)) as (nrf, _, host):
        assert await send_init(host) == h("60 04 01")
        assert await host.request(struct.pack("<BBI", 1, 2, 4096)) == h("60 01 01")
        for start in range(0, 4096, 64):
            host.send(b"\x08" + FIRMWARE[start : start + 64])
        host.send(h("03"))
        assert await host.silent()
        assert nrf.stats.resets == {"power-cycle": 1}
        await nrf.until_booted()
        assert (await host.request(h("06 02")))[7:11] == bytes(4)  # firmware offset back to 0
        assert await send_image(host, DAT, FIRMWARE) == h("60 04 01")  # fires only once


async def test_stall_delays_with_flow_control_and_overruns_without() -> None:
    faults = Faults(stalls=(Stall(after_frame=1, seconds=0.3),))
    async with session(faults=faults) as (nrf, _, host):
        await host.request(h("09 01"))
        assert await rtt(host, h("09 02")) >= 0.25
        assert nrf.stats.resets == {}
    async with session(faults=faults, flow_control=False) as (nrf, _, host):
        await host.request(h("09 01"))
        host.send(h("06 01"))  # 3 bytes fit the UARTE FIFO
        host.send(h("06 01"))
        assert await host.silent(0.4)
        assert nrf.stats.resets == {"uart-error": 1}


# --- stats --------------------------------------------------------------------------------------------


async def test_stats_count_traffic_and_resent_bytes() -> None:
    async with session() as (nrf, _, host):
        await host.request(h("09 DB"))  # escaped both ways
        assert (nrf.stats.bytes_in, nrf.stats.bytes_out, nrf.stats.frames_in, nrf.stats.frames_out) == (
            4,
            6,
            1,
            1,
        )
        assert await send_init(host) == h("60 04 01")
        assert await host.request(struct.pack("<BBI", 1, 2, 4096)) == h("60 01 01")
        for start in range(0, 2048, 64):
            host.send(b"\x08" + FIRMWARE[start : start + 64])
        await host.request(h("03"))
        assert await send_object(host, FIRMWARE[:4096]) == h("60 04 01")  # the CREATE discards 2048 B
        assert nrf.stats.image_bytes == {"application": 2048 + 4096}
        assert nrf.stats.objects_created == {"command": 1, "data": 2}
