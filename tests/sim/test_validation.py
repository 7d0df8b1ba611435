"""Init-packet validation in the SDK's order (§8), both profiles (§15), post-validation (§9)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from mcu_updater.dfu.initpacket import FwType, HashType, InitCommand
from mcu_updater.sim.bootloader import Mode
from mcu_updater.sim.state import Bank, BankCode, FlashState, Settings, SoftDevice
from mcu_updater.sim.validation import Profile
from tests.sim.helpers import Driver, h, init_command, package, packet

APP = bytes(range(256)) * 32  # 8 KiB
SD_6_1_1 = package("sd_app_signed.zip")[0].bin
NO_SD = FlashState(softdevice=None)


def execute(
    command: InitCommand, profile: Profile = Profile.SDK, flash: FlashState | None = None, **options: Any
) -> str:
    """The EXECUTE reply to a packet for ``command`` on a fresh device, as spaced hex."""
    device = Driver.fresh(profile=profile, flash=flash)
    return device.send_init(packet(command, **options)).hex(" ").upper()


GOOD = init_command(APP)


def test_a_good_packet_is_accepted() -> None:
    assert execute(GOOD) == "60 04 01"


def test_undecodable_packet_is_an_invalid_object() -> None:
    device = Driver.fresh()
    assert device.send_init(h("FF FF FF 07")) == h("60 04 05")


@pytest.mark.parametrize(
    ("step", "command", "options", "reply"),
    [
        ("3 unsigned", GOOD, {"signed": False}, "60 04 0B 08"),
        ("4 ed25519", GOOD, {"signature_type": 1}, "60 04 0B 0B"),
        ("5 short signature", GOOD, {"signature": bytes(63)}, "60 04 0A"),
        ("6 wrong key", GOOD, {"key": ec.generate_private_key(ec.SECP256R1())}, "60 04 05"),
        ("7 no type", replace(GOOD, fw_type=None), {}, "60 04 0B 04"),
        ("8 CRC hash", replace(GOOD, hash_type=HashType.CRC), {}, "60 04 0B 09"),
        ("8 no hash", replace(GOOD, hash_type=None, hash=None), {}, "60 04 0B 09"),
        ("9 no hw_version", replace(GOOD, hw_version=None), {}, "60 04 0B 04"),
        ("10 hw_version 51", replace(GOOD, hw_version=51), {}, "60 04 0B 06"),
        ("11 sd_req", replace(GOOD, sd_req=(0xA8,)), {}, "60 04 0B 07"),
        ("12 no fw_version", replace(GOOD, fw_version=None), {}, "60 04 0B 04"),
        ("13 no app_size", replace(GOOD, app_size=None), {}, "60 04 0B 04"),
        ("13 app_size 0", replace(GOOD, app_size=0), {}, "60 04 0B 04"),
        ("13 bl_size too big", replace(GOOD, fw_type=FwType.BOOTLOADER, bl_size=0x6001), {}, "60 04 04"),
        ("14 no room", replace(GOOD, app_size=0x75000 - 0x26000 + 4), {}, "60 04 04"),
    ],
)
def test_each_check_and_its_reply(
    step: str, command: InitCommand, options: dict[str, Any], reply: str
) -> None:
    assert execute(command, **options) == reply, step


@pytest.mark.parametrize(
    ("command", "options", "reply"),
    [
        (replace(GOOD, hw_version=51, fw_type=None), {"signed": False}, "60 04 0B 08"),
        (replace(GOOD, hw_version=51, fw_type=None), {}, "60 04 0B 04"),
        (replace(GOOD, hw_version=51, hash_type=HashType.CRC), {}, "60 04 0B 09"),
        (replace(GOOD, hw_version=51, sd_req=(0xA8,)), {}, "60 04 0B 06"),
        (replace(GOOD, sd_req=(0xA8,), fw_version=0), {}, "60 04 0B 07"),
        (replace(GOOD, app_size=None, fw_version=None), {}, "60 04 0B 04"),
    ],
)
def test_the_first_failing_check_wins(command: InitCommand, options: dict[str, Any], reply: str) -> None:
    assert execute(command, **options) == reply


def test_without_a_configured_key_any_64_byte_signature_passes_but_one_is_required() -> None:
    assert Driver.fresh(keyless=True).send_init(packet(GOOD, signature=bytes(64))) == h("60 04 01")
    assert Driver.fresh(keyless=True).send_init(packet(GOOD, signed=False)) == h("60 04 0B 08")
    assert Driver.fresh(keyless=True).send_init(packet(GOOD, signature=bytes(65))) == h("60 04 05")


def test_packet_failing_the_size_check_is_still_marked_valid() -> None:
    device = Driver.fresh()
    assert device.send_init(packet(replace(GOOD, app_size=None))) == h("60 04 0B 04")
    assert device.one(h("04")) == h("60 04 01")  # the quirk: valid flag set before the size check
    assert device.create(2, 4096) == h("60 01 08")  # ... with an image size of 0


# --- version rules (§8.2, §15) -------------------------------------------------------------------


def installed(version: int = 2, *, bootloader: int = 1) -> FlashState:
    settings = Settings(bootloader_version=bootloader, app_version=version)
    settings.bank_0 = Bank(BankCode.VALID_APP, len(APP))
    return FlashState(settings=settings)


@pytest.mark.parametrize(
    ("profile", "fw_type", "version", "reply"),
    [
        (Profile.SDK, FwType.APPLICATION, 3, "60 04 01"),
        (Profile.SDK, FwType.APPLICATION, 2, "60 04 01"),  # same version re-installs
        (Profile.SDK, FwType.APPLICATION, 1, "60 04 0B 05"),
        (Profile.SDK, FwType.SOFTDEVICE, 1, "60 04 0B 05"),  # compared with the *app* version
        (Profile.SDK, FwType.BOOTLOADER, 5, "60 04 01"),
        (Profile.SDK, FwType.BOOTLOADER, 4, "60 04 0B 05"),  # strictly greater
        (Profile.AZURE_SAMPLE, FwType.APPLICATION, 1, "60 04 01"),  # downgrade accepted
        (Profile.AZURE_SAMPLE, FwType.APPLICATION, 2, "60 04 0B 05"),  # same rejected
        (Profile.AZURE_SAMPLE, FwType.BOOTLOADER, 3, "60 04 01"),
        (Profile.AZURE_SAMPLE, FwType.BOOTLOADER, 4, "60 04 0B 05"),
    ],
)
def test_version_rules(profile: Profile, fw_type: FwType, version: int, reply: str) -> None:
    command = replace(GOOD, fw_type=fw_type, fw_version=version)
    if fw_type is FwType.SOFTDEVICE:
        command = replace(command, sd_size=len(APP), sd_req=(0xAF,))
    elif fw_type is FwType.BOOTLOADER:
        command = replace(command, bl_size=len(APP))
    assert execute(command, profile, installed(2, bootloader=4)) == reply


def test_softdevice_without_fw_version_is_accepted() -> None:
    command = replace(GOOD, fw_type=FwType.SOFTDEVICE, fw_version=None, sd_size=len(SD_6_1_1))
    assert execute(command) == "60 04 01"


# --- sd_req (§8.3) --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flash", "fw_type", "sd_req", "fw_version", "reply"),
    [
        (None, FwType.APPLICATION, (0xAF,), 2, "60 04 01"),
        (None, FwType.APPLICATION, (0xA8,), 2, "60 04 0B 07"),
        (None, FwType.APPLICATION, (0xFFFE,), 2, "60 04 0B 07"),
        (None, FwType.APPLICATION, (0xA8, 0xAF), 2, "60 04 01"),
        (None, FwType.APPLICATION, (0x00, 0xAF), 2, "60 04 01"),
        (None, FwType.APPLICATION, (0x00, 0xA8), 2, "60 04 0B 07"),
        (None, FwType.APPLICATION, (), 2, "60 04 01"),
        (None, FwType.APPLICATION, (0x00,), 2, "60 04 01"),
        (None, FwType.SOFTDEVICE, (), None, "60 04 0B 07"),
        (None, FwType.SOFTDEVICE, (0x00,), None, "60 04 0B 07"),
        (None, FwType.BOOTLOADER, (), 2, "60 04 01"),
        (None, FwType.SOFTDEVICE_BOOTLOADER, (0x00,), 2, "60 04 01"),
        (NO_SD, FwType.APPLICATION, (0xAF,), 2, "60 04 0B 07"),
        (NO_SD, FwType.APPLICATION, (0xFFFE,), 2, "60 04 0B 07"),
        (NO_SD, FwType.APPLICATION, (), 2, "60 04 01"),
        (NO_SD, FwType.APPLICATION, (0x00, 0xAF), 2, "60 04 01"),
        (NO_SD, FwType.SOFTDEVICE, (), None, "60 04 0B 07"),
        (NO_SD, FwType.SOFTDEVICE, (), 2, "60 04 01"),
    ],
)
def test_sd_req_table(
    flash: FlashState | None, fw_type: FwType, sd_req: tuple[int, ...], fw_version: int | None, reply: str
) -> None:
    command = replace(
        GOOD, fw_type=fw_type, sd_req=sd_req, fw_version=fw_version, sd_size=len(SD_6_1_1), bl_size=0x4000
    )
    assert execute(command, flash=flash.clone() if flash else None) == reply


# --- azure-sample build (§15) --------------------------------------------------------------------


@pytest.mark.parametrize(
    "options", [{"signed": False}, {"key": ec.generate_private_key(ec.SECP256R1())}, {"signature_type": 1}]
)
def test_azure_sample_never_checks_signatures(options: dict[str, Any]) -> None:
    assert execute(GOOD, Profile.AZURE_SAMPLE, **options) == "60 04 01"


def test_azure_sample_debug_packet_skips_hw_sd_fw_checks_and_records_no_version() -> None:
    debug = replace(GOOD, hw_version=51, sd_req=(0xA8,), fw_version=0, is_debug=True)
    device = Driver.fresh(profile=Profile.AZURE_SAMPLE, flash=installed(2))
    assert device.send_init(packet(debug)) == h("60 04 01")
    assert device.send_firmware(APP) == h("60 04 01")
    assert device.bootloader.settings.app_version == 2
    assert device.bootloader.flash.images[-1].version == 0


def test_stock_build_ignores_is_debug() -> None:
    assert execute(replace(GOOD, hw_version=51, is_debug=True)) == "60 04 0B 06"


def test_azure_sample_does_not_check_the_image_hash() -> None:
    wrong = init_command(bytes(len(APP)))
    for profile, reply in ((Profile.SDK, "60 04 0B 0C"), (Profile.AZURE_SAMPLE, "60 04 01")):
        device = Driver.fresh(profile=profile)
        assert device.send_init(packet(wrong)) == h("60 04 01")
        assert device.send_firmware(APP) == h(reply)


# --- flash space (§8.4) and post-validation (§9) -----------------------------------------------------


def test_image_too_big_for_bank_1_deletes_the_app_at_init_execute() -> None:
    device = Driver.fresh(flash=installed(2))
    big = replace(GOOD, app_size=0x75000 - 0x26000 - 0x1000)
    assert device.send_init(packet(big)) == h("60 04 01")
    assert not device.bootloader.app_valid
    device.send(h("0C"))  # the deletion was written with the settings
    assert not device.bootloader.app_valid
    assert [entry.image_type for entry in device.bootloader.inventory()] == [0x02, 0x00]


def test_image_that_fits_bank_1_keeps_the_app_until_it_is_replaced() -> None:
    device = Driver.fresh(flash=installed(2))
    assert device.send_init(packet(GOOD)) == h("60 04 01")
    assert device.bootloader.app_valid


def test_no_room_deletes_nothing() -> None:
    device = Driver.fresh(flash=installed(2))
    assert device.send_init(packet(replace(GOOD, app_size=0x75000 - 0x26000 + 4))) == h("60 04 04")
    assert device.bootloader.app_valid


def test_app_without_sd_req_replaces_the_softdevice() -> None:
    device = Driver.fresh()
    assert device.send_image(packet(replace(GOOD, sd_req=())), APP) == h("60 04 01")
    inventory = device.bootloader.inventory()
    assert [(e.image_type, e.address, e.length) for e in inventory] == [
        (0x02, 0x78000, 0x6000),
        (0x01, 0x1000, len(APP)),
    ]
    assert device.bootloader.flash.softdevice is None


def softdevice_image(version: int) -> bytes:
    """The fixture's SoftDevice image with another version in its info struct."""
    image = bytearray(SD_6_1_1)
    image[0x2014:0x2018] = version.to_bytes(4, "little")
    return bytes(image)


def sd_command(image: bytes) -> InitCommand:
    return init_command(
        image, fw_type=FwType.SOFTDEVICE, fw_version=None, app_size=0, sd_size=len(image), sd_req=(0xAF,)
    )


def test_minor_softdevice_update_keeps_the_app_and_waits_for_it() -> None:
    device = Driver.fresh(flash=installed(2))
    assert device.send_image(packet(sd_command(SD_6_1_1)), SD_6_1_1) == h("60 04 01")
    boot = device.boots[-1]
    assert (boot.activated, boot.continuation, boot.mode) == ("softdevice", True, Mode.DFU)
    assert device.bootloader.flash.softdevice == SoftDevice(fwid=0xB7, version=6001001, end=0x26000)
    assert device.bootloader.app_valid


def test_major_softdevice_update_deletes_the_app() -> None:
    image = softdevice_image(7000000)
    device = Driver.fresh(flash=installed(2))
    assert device.send_image(packet(sd_command(image)), image) == h("60 04 01")
    assert not device.boots[-1].continuation
    assert not device.bootloader.app_valid
    assert device.bootloader.firmware_version(1).version == 7000000


def test_softdevice_without_info_struct_fails_post_validation() -> None:
    image = bytes(len(SD_6_1_1))
    device = Driver.fresh()
    assert device.send_image(packet(sd_command(image)), image) == h("60 04 05")
    assert device.resets[-1].value == "dfu-complete"
    assert device.bootloader.flash.softdevice is not None  # received in bank 1: the old one stays


def test_softdevice_info_struct_smaller_than_its_init_size_fails() -> None:
    command = replace(sd_command(SD_6_1_1), sd_size=0x26000)
    device = Driver.fresh()
    padded = SD_6_1_1 + bytes(0x26000 - len(SD_6_1_1))
    assert device.send_image(packet(replace(command, hash=init_command(padded).hash)), padded) == h(
        "60 04 05"
    )
