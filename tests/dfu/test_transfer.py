"""The client and the object algorithm against the virtual nRF52, with faults on the line and device."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from mcu_updater.dfu.client import DfuClient
from mcu_updater.dfu.package import Image
from mcu_updater.dfu.transfer import ImageTransfer, Progress
from mcu_updater.dfu.wire import ExtError, ObjectType, OpCode, ResultCode
from mcu_updater.errors import (
    DeviceRejectedError,
    LinkError,
    ProtocolError,
    ReplyTimeoutError,
    TransientError,
)
from mcu_updater.sim.device import VirtualNrf52
from mcu_updater.sim.faults import Faults, LinkFaults, ReplyFault
from mcu_updater.sim.memory import SimTransport
from mcu_updater.sim.validation import Profile
from tests.hosts import connector, fixture_package, key_a, received_sha256, sha256

APP_SIZE = 61440


def app_image() -> Image:
    return fixture_package("app_v2_signed.zip").images[0]


async def send(client: DfuClient, image: Image, *, retries: int = 4) -> tuple[ImageTransfer, list[Progress]]:
    transfer = ImageTransfer(
        client, image.name, image.init_packet, image.firmware, mtu=await client.mtu(), retries=retries
    )
    steps = [step async for step in transfer.run()]
    return transfer, steps


async def transfer_on(
    nrf: VirtualNrf52, image: Image, *, retries: int = 4, prn: int = 0
) -> tuple[ImageTransfer, list[Progress], DfuClient]:
    """Connect to a booted simulator, send ``image`` once, close the port."""
    client = await connector(nrf)()
    try:
        await client.wait_ready()
        if prn:
            await client.set_prn(prn)
        transfer, steps = await send(client, image, retries=retries)
    finally:
        await client.link.close()
    return transfer, steps, client


def device(faults: Faults | None = None, **kwargs: object) -> VirtualNrf52:
    return VirtualNrf52(public_key=key_a(), faults=faults, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("chunk", [1, 7, None])
async def test_clean_transfer_installs_the_exact_image(chunk: int | None) -> None:
    image = app_image()
    async with device() as nrf:
        transfer, steps, _ = await transfer_on(nrf, image)
    assert received_sha256(nrf, "application") == [sha256(image.firmware)]
    assert [s.phase for s in steps] == ["init"] + ["data"] * 14 + ["done"]
    assert [s.offset for s in steps][-1] == APP_SIZE
    assert (steps[-1].objects_done, steps[-1].objects_total) == (15, 15)
    assert transfer.bytes_resent == 0
    assert transfer.retry_count == 0
    assert nrf.stats.objects_created["data"] == 15
    assert nrf.stats.image_bytes["application"] == APP_SIZE


async def test_writes_are_whole_words_sized_from_the_mtu() -> None:
    async with device() as nrf:
        frames: list[bytes] = []
        client = await connector(nrf)()
        original = client.link.send_many

        def spy(payloads: Sequence[bytes]) -> None:
            frames.extend(payloads)
            original(payloads)

        client.link.send_many = spy  # type: ignore[method-assign]
        await client.wait_ready()
        await send(client, app_image())
        await client.link.close()
    data_writes = [len(f) - 1 for f in frames if f[0] == OpCode.WRITE][3:]  # after the 141-byte init packet
    assert max(data_writes) == 60
    assert all(size % 4 == 0 for size in data_writes)
    assert data_writes.count(60) == 15 * (4096 // 60)
    assert sum(data_writes) == APP_SIZE


async def test_dropped_crc_reply_resumes_without_resending() -> None:
    faults = Faults(replies=(ReplyFault("drop", opcode=OpCode.CRC_GET, occurrence=5),))
    image = app_image()
    async with device(faults) as nrf:
        client = await connector(nrf)()
        await client.wait_ready()
        booting_timeouts = client.stats.timeouts
        transfer, _ = await send(client, image)
        await client.link.close()
    assert received_sha256(nrf, "application") == [sha256(image.firmware)]
    assert transfer.retry_count == 1
    assert transfer.bytes_resent == 0, "the complete object on the device is executed, not re-sent"
    assert nrf.stats.objects_created["command"] == 1, (
        "the accepted init packet is re-executed, not re-created"
    )
    assert client.stats.timeouts - booting_timeouts == 1


async def test_corrupted_byte_resends_only_its_object() -> None:
    image = app_image()
    async with device(Faults(flip_rx=(20000,))) as nrf:
        transfer, _, _ = await transfer_on(nrf, image)
    assert received_sha256(nrf, "application") == [sha256(image.firmware)]
    assert transfer.retry_count == 1
    assert transfer.bytes_resent == 4096
    assert nrf.stats.image_bytes["application"] == APP_SIZE + 4096


async def test_power_cycle_mid_image_restores_init_and_restarts_data() -> None:
    image = app_image()
    async with device(Faults(power_cycle_at=30000)) as nrf:
        transfer, _, _ = await transfer_on(nrf, image)
    assert received_sha256(nrf, "application") == [sha256(image.firmware)]
    assert nrf.stats.resets["power-cycle"] == 1
    assert nrf.stats.objects_created["command"] == 1, "init packet survived the reset in flash"
    assert transfer.retry_count >= 1
    assert 28672 <= transfer.bytes_resent <= 32768


async def test_new_connection_continues_mid_object() -> None:
    """A host that dies mid-object and reconnects continues from the device's RAM offset."""
    image = app_image()
    async with device() as nrf:
        client = await connector(nrf)()
        await client.wait_ready()
        await client.select(ObjectType.COMMAND)
        await client.create(ObjectType.COMMAND, len(image.init_packet))
        await client.write(image.init_packet[:64])
        await client.write(image.init_packet[64:128])
        await client.write(image.init_packet[128:])
        await client.execute(1.0)
        await client.create(ObjectType.DATA, 4096)
        for offset in range(0, 4096 + 2048, 64):
            if offset == 4096:
                await client.crc()
                await client.execute(1.0)
                await client.create(ObjectType.DATA, 4096)
            await client.write(image.firmware[offset : offset + 64])  # nrfutil's chunk size
        await client.crc()
        await client.link.close()

        second = await connector(nrf)()
        await second.wait_ready()
        transfer, steps = await send(second, image)
        await second.link.close()
    assert received_sha256(nrf, "application") == [sha256(image.firmware)]
    assert transfer.bytes_resent == 0
    assert steps[1].offset == 8192, "the half-written second object was finished in place"
    assert nrf.stats.image_bytes["application"] == APP_SIZE


@pytest.mark.parametrize(
    "line",
    [
        LinkFaults(corrupt=0.0002, seed=7),
        LinkFaults(drop=0.0002, seed=11),
        LinkFaults(drop=0.01, direction="to_host", seed=3),
        LinkFaults(delay=0.02),
    ],
    ids=["corrupt", "drop", "drop-replies", "delay"],
)
async def test_faulty_line_still_delivers_the_exact_image(line: LinkFaults) -> None:
    image = app_image()
    async with device() as nrf:
        client = await connector(nrf, chunk=16, link=line)()
        await client.wait_ready()
        transfer, _ = await send(client, image, retries=8)
        await client.link.close()
    assert received_sha256(nrf, "application") == [sha256(image.firmware)]
    if line.delay:
        assert transfer.retry_count == 0, "latency alone is no reason to retry"
    else:
        assert transfer.retry_count >= 1


async def test_prn_pacing_waits_for_every_notification() -> None:
    image = app_image()
    async with device(flow_control=False) as nrf:
        _, _, client = await transfer_on(nrf, image, prn=1)
    assert received_sha256(nrf, "application") == [sha256(image.firmware)]
    assert client.stats.stray_replies == 0


async def test_device_rejection_is_not_retried_and_keeps_its_codes() -> None:
    image = fixture_package("app_v3_sdreq_A8_signed.zip").images[0]
    async with device() as nrf:
        client = await connector(nrf)()
        await client.wait_ready()
        with pytest.raises(DeviceRejectedError) as caught:
            await send(client, image)
        await client.link.close()
    assert (caught.value.result, caught.value.ext) == (ResultCode.EXT_ERROR, ExtError.SD_VERSION_FAILURE)
    assert nrf.stats.objects_created["command"] == 1
    assert "EXT 0x07" in caught.value.message


async def test_persistent_silence_gives_up_with_a_transient_error() -> None:
    faults = Faults(replies=(ReplyFault("drop", opcode=OpCode.CRC_GET),))
    async with device(faults) as nrf:
        client = await connector(nrf)()
        await client.wait_ready()
        with pytest.raises(TransientError, match="gave up after 2 retries") as caught:
            await send(client, app_image(), retries=2)
        await client.link.close()
    assert caught.value.exit_code == 75
    assert isinstance(caught.value.__cause__, ReplyTimeoutError)


async def test_late_reply_is_not_taken_for_the_next_one() -> None:
    """A SELECT reply delayed past its timeout must not answer the retried SELECT's successor."""
    faults = Faults(replies=(ReplyFault("delay", opcode=OpCode.SELECT, occurrence=1, seconds=0.45),))
    image = app_image()
    async with device(faults) as nrf:
        _, steps, client = await transfer_on(nrf, image)
    assert steps[-1].phase == "done"
    assert client.stats.stray_replies >= 1
    assert received_sha256(nrf, "application") == [sha256(image.firmware)]


async def test_unplugged_cable_fails_the_waiting_request() -> None:
    async with device(Faults(replies=(ReplyFault("drop", opcode=OpCode.CRC_GET),))) as nrf:
        cables: list[SimTransport] = []
        client = await connector(nrf, on_open=cables.append)()
        await client.wait_ready()
        request = asyncio.ensure_future(client.crc())
        await asyncio.sleep(0.05)
        cables[0].unplug(OSError(5, "Input/output error"))
        with pytest.raises(LinkError, match="was closed"):
            await request
        await client.link.close()


async def test_azure_profile_accepts_unsigned_packages() -> None:
    image = fixture_package("app_v2_unsigned.zip").images[0]
    async with VirtualNrf52(profile=Profile.AZURE_SAMPLE) as nrf:
        await transfer_on(nrf, image)
    assert received_sha256(nrf, "application") == [sha256(image.firmware)]


async def test_damaged_mtu_reply_is_refused_not_trusted() -> None:
    """A damaged high byte (0x0083 → 0x0283) would announce 643-byte frames and wedge the receiver."""
    corrupt = Faults(replies=(ReplyFault("corrupt", opcode=OpCode.MTU_GET, occurrence=1, xor=0x02),))
    async with device(corrupt) as nrf:
        client = await connector(nrf)()
        await client.wait_ready()
        with pytest.raises(ProtocolError, match="MTU of 643 bytes"):
            await client.mtu()
        assert await client.mtu() == 131
        await client.link.close()


async def test_lost_create_reply_at_an_object_boundary_is_resumed() -> None:
    """A data CREATE whose reply is lost leaves an empty object: the resume creates it again instead
    of executing it (which the device refuses for ever)."""
    faults = Faults(replies=(ReplyFault("drop", opcode=OpCode.CREATE, occurrence=4),))
    image = app_image()
    async with device(faults) as nrf:
        transfer, _, _ = await transfer_on(nrf, image)
    assert received_sha256(nrf, "application") == [sha256(image.firmware)]
    assert transfer.retry_count == 1
    assert transfer.bytes_resent == 0


async def test_init_execute_reply_damaged_to_a_reserved_code_is_retried() -> None:
    """``60 04 01`` with its result flipped to 0x00: a code SDK 15.2 never sends, so not a refusal."""
    damaged = ReplyFault(
        "corrupt", opcode=OpCode.EXECUTE, occurrence=1, xor=0x01, match=lambda frame: len(frame) == 3
    )
    image = app_image()
    async with device(Faults(replies=(damaged,))) as nrf:
        transfer, _, _ = await transfer_on(nrf, image)
    assert received_sha256(nrf, "application") == [sha256(image.firmware)]
    assert transfer.retry_count == 1
