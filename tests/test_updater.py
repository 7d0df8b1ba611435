"""Inventory, planning, and whole runs (one session per image, reconnection in between)."""

from __future__ import annotations

import pytest

from mcu_updater.dfu.initpacket import FwType
from mcu_updater.dfu.wire import ImageType, OpCode
from mcu_updater.errors import DeviceRejectedError, PolicyRefusedError, TargetNotAnsweringError
from mcu_updater.sim.bootloader import Mode
from mcu_updater.sim.device import VirtualNrf52
from mcu_updater.sim.faults import Faults, ReplyFault
from mcu_updater.sim.memory import SimTransport
from mcu_updater.updater import (
    Action,
    Activated,
    Connected,
    Event,
    Finished,
    ImageProgress,
    ImageSent,
    ImageStarted,
    InstalledImage,
    Inventory,
    InventoryRead,
    Options,
    Planned,
    UpdateRun,
    plan,
    read_inventory,
)
from tests.hosts import connector, fixture_package, key_a, received_sha256, sha256

FRESH = Inventory(
    (
        InstalledImage(ImageType.BOOTLOADER, 1, 0x78000, 0x6000),
        InstalledImage(ImageType.SOFTDEVICE, 6001000, 0x1000, 0x26000),
    )
)


BL_V2 = Inventory((InstalledImage(ImageType.BOOTLOADER, 2, 0x78000, 0x6000),))


def with_app(version: int, length: int = 61440) -> Inventory:
    return Inventory((*FRESH.images, InstalledImage(ImageType.APPLICATION, version, 0x26000, length)))


@pytest.mark.parametrize(
    ("package", "inventory", "force", "actions"),
    [
        ("app_v2_signed.zip", FRESH, False, ["install"]),
        ("app_v2_signed.zip", with_app(2), False, ["skip"]),
        ("app_v2_signed.zip", with_app(2), True, ["update"]),
        ("app_v2_signed.zip", with_app(2, 4096), False, ["update"]),
        ("app_v2_signed.zip", with_app(1), False, ["update"]),
        ("app_v1_signed_downgrade.zip", with_app(2), False, ["update"]),
        ("bl_v2_signed.zip", FRESH, False, ["update"]),
        (
            "bl_v2_signed.zip",
            Inventory((InstalledImage(ImageType.BOOTLOADER, 2, 0x78000, 0x6000),)),
            False,
            ["skip"],
        ),
        ("sd_app_signed.zip", FRESH, False, ["update", "install"]),
        ("sd_app_signed.zip", Inventory(known=False), False, ["install", "install"]),
    ],
)
def test_plan(package: str, inventory: Inventory, force: bool, actions: list[str]) -> None:
    items = plan(fixture_package(package), inventory, force=force)
    assert [item.action.value for item in items] == actions
    assert all(item.reason for item in items)


def test_softdevice_is_skipped_only_if_the_app_accepts_it() -> None:
    package = fixture_package("sd_app_signed.zip")
    sd_installed = Inventory((InstalledImage(ImageType.SOFTDEVICE, 6001001, 0x1000, 0x26000),))
    items = plan(package, sd_installed)
    assert [(i.image.kind, i.action) for i in items] == [
        (FwType.SOFTDEVICE, Action.SKIP),
        (FwType.APPLICATION, Action.INSTALL),
    ]


async def collect(run: UpdateRun) -> list[Event]:
    return [event async for event in run.events()]


async def test_inventory_of_a_fresh_device() -> None:
    async with VirtualNrf52() as nrf:
        client = await connector(nrf)()
        await client.wait_ready()
        inventory = await read_inventory(client)
        await client.link.close()
    assert inventory.known
    assert [(i.kind, i.version, i.address, i.length) for i in inventory.images] == [
        ("bootloader", 1, 0x78000, 0x6000),
        ("softdevice", 6001000, 0x1000, 0x26000),
    ]


async def test_softdevice_and_app_in_two_sessions_with_activation_between() -> None:
    package = fixture_package("sd_app_signed.zip")
    opened: list[SimTransport] = []
    async with VirtualNrf52(public_key=key_a()) as nrf:
        events = await collect(UpdateRun(package, connector(nrf, on_open=opened.append)))
        second = await collect(UpdateRun(package, connector(nrf)))
    kinds = [type(e).__name__ for e in events]
    assert kinds[:3] == ["Connected", "InventoryRead", "Planned"]
    assert kinds.count("ImageStarted") == 2
    assert kinds.index("Activated") < [i for i, k in enumerate(kinds) if k == "ImageStarted"][1]
    started = [e.image.kind for e in events if isinstance(e, ImageStarted)]
    assert started == [FwType.SOFTDEVICE, FwType.APPLICATION]
    assert len(opened) == 2, "the port is re-opened for the second image"
    inventories = [e.inventory for e in events if isinstance(e, InventoryRead)]
    assert inventories[1].find(ImageType.SOFTDEVICE) == InstalledImage(0, 6001001, 0x1000, 0x26000)
    sd, app = package.images
    assert received_sha256(nrf, "softdevice") == [sha256(sd.firmware)]
    assert received_sha256(nrf, "application") == [sha256(app.firmware)]
    finished = events[-1]
    assert isinstance(finished, Finished)
    assert finished.firmware_bytes == sd.size + app.size
    assert [s.image.name for s in finished.sent] == ["softdevice", "application"]
    # Everything is installed now: the second run only reads the inventory.
    assert not [e for e in second if isinstance(e, ImageSent)]
    planned = next(e for e in second if isinstance(e, Planned))
    assert [i.action for i in planned.items] == [Action.SKIP, Action.SKIP]


async def test_rejection_is_reworded_with_device_facts() -> None:
    package = fixture_package("app_v3_sdreq_A8_signed.zip")
    async with VirtualNrf52(public_key=key_a()) as nrf:
        with pytest.raises(DeviceRejectedError) as caught:
            await collect(UpdateRun(package, connector(nrf)))
    message = str(caught.value)
    assert "[0xA8]" in message
    assert "FWID 0xAF" in message
    assert "--sd-req 0xAF" in caught.value.hint
    assert caught.value.exit_code == 65


async def test_downgrade_rejection_names_both_versions() -> None:
    async with VirtualNrf52(public_key=key_a()) as nrf:
        await collect(UpdateRun(fixture_package("app_v2_signed.zip"), connector(nrf)))
        with pytest.raises(DeviceRejectedError, match=r"version \(1\) is too low.*runs 2"):
            await collect(UpdateRun(fixture_package("app_v1_signed_downgrade.zip"), connector(nrf)))


async def test_silent_target_is_reported_as_not_answering() -> None:
    async with VirtualNrf52(dfu_pin=False) as nrf:
        await collect(UpdateRun(fixture_package("app_v2_signed.zip"), connector(nrf)))
        with pytest.raises(TargetNotAnsweringError) as caught:
            await collect(UpdateRun(fixture_package("app_v2_signed.zip"), connector(nrf)))
    assert caught.value.exit_code == 69


async def test_events_report_connection_and_options() -> None:
    async with VirtualNrf52(public_key=key_a()) as nrf:
        events = await collect(
            UpdateRun(fixture_package("app_v2_signed.zip"), connector(nrf), Options(prn=4))
        )
    connected = events[0]
    assert isinstance(connected, Connected)
    assert connected.mtu == 131
    assert not [e for e in events if isinstance(e, Activated)]


async def test_abort_when_idle_boots_the_application() -> None:
    package = fixture_package("app_v2_signed.zip")
    async with VirtualNrf52(public_key=key_a()) as nrf:
        await collect(UpdateRun(package, connector(nrf)))
        nrf.dfu_pin = False
        await collect(UpdateRun(package, connector(nrf), Options(abort_when_idle=True)))
        await nrf.until_booted()
        assert nrf.mode == Mode.APP
    assert nrf.stats.resets["abort"] == 1


async def test_downgrade_policy_refuses_before_sending() -> None:
    async with VirtualNrf52(public_key=key_a()) as nrf:
        await collect(UpdateRun(fixture_package("app_v2_signed.zip"), connector(nrf)))
        sent_before = nrf.stats.bytes_in
        older = fixture_package("app_v1_signed_downgrade.zip")
        with pytest.raises(PolicyRefusedError, match=r"older than the application the device runs \(2\)"):
            await collect(UpdateRun(older, connector(nrf), Options(allow_downgrade=False)))
        assert nrf.stats.objects_created["command"] == 1, "no init packet of the older image was sent"
        assert nrf.stats.bytes_in - sent_before < 200, "only ping and inventory requests"


async def test_port_vanishing_mid_image_is_reopened_and_resumed() -> None:
    package = fixture_package("app_v2_signed.zip")
    cables: list[SimTransport] = []
    async with VirtualNrf52(public_key=key_a()) as nrf:
        events = []
        async for event in UpdateRun(package, connector(nrf, on_open=cables.append)).events():
            events.append(event)
            if isinstance(event, ImageProgress) and event.progress.offset == 8192 and len(cables) == 1:
                cables[-1].unplug(OSError(5, "Input/output error"))
    assert len(cables) == 2, "one reconnection"
    assert received_sha256(nrf, "application") == [sha256(package.images[0].firmware)]
    sent = [e for e in events if isinstance(e, ImageSent)]
    assert sent[0].bytes_resent <= 4096
    assert nrf.stats.objects_created["command"] == 1


async def test_lost_inventory_reply_is_asked_again() -> None:
    faults = Faults(replies=(ReplyFault("drop", opcode=OpCode.FW_VERSION, occurrence=2),))
    async with VirtualNrf52(public_key=key_a(), faults=faults) as nrf:
        events = await collect(UpdateRun(fixture_package("app_v2_signed.zip"), connector(nrf)))
    inventory = next(e for e in events if isinstance(e, InventoryRead)).inventory
    assert [i.kind for i in inventory.images] == ["bootloader", "softdevice"]
    assert isinstance(events[-1], Finished)
