"""Request handling byte for byte (§3, §4, §10, §12): golden replies, object rules, PRN, resets."""

from __future__ import annotations

import struct
import zlib

import pytest

from mcu_updater.sim.bootloader import (
    Erase,
    FeedTimer,
    Mode,
    Program,
    Reset,
    ResetReason,
    Send,
    SettingsWrite,
)
from tests.sim.helpers import Driver, h, init_command, package, packet

FIRMWARE = bytes(range(256)) * 16 + bytes(range(100, 200))  # 4196 B: one full object and a short one
DAT = packet(init_command(FIRMWARE))


def ready() -> Driver:
    """A fresh device that has accepted the init packet for FIRMWARE."""
    device = Driver.fresh()
    assert device.send_init(DAT) == h("60 04 01")
    return device


@pytest.mark.parametrize(
    ("request_", "reply"),
    [
        ("00", "60 00 01 01"),
        ("01 01 10 00 00 00", "60 01 01"),
        ("02 00 00", "60 02 01"),
        ("03", "60 03 01 00 00 00 00 00 00 00 00"),
        ("04", "60 04 05"),
        ("06 01", "60 06 01 00 01 00 00 00 00 00 00 00 00 00 00"),
        ("06 02", "60 06 01 00 10 00 00 00 00 00 00 00 00 00 00"),
        ("07", "60 07 01 83 00"),
        ("09 77", "60 09 01 77"),
        ("0A", "60 0A 01 32 28 05 00 30 45 41 41 00 00 08 00 00 00 01 00 00 10 00 00"),
        ("0B 00", "60 0B 01 02 01 00 00 00 00 80 07 00 00 60 00 00"),
        ("0B 01", "60 0B 01 00 68 91 5B 00 00 10 00 00 00 60 02 00"),
        ("0B 02", "60 0B 01 FF 00 00 00 00 00 00 00 00 00 00 00 00"),
        ("05", "60 05 02"),
        ("0D", "60 0D 02"),
        ("60", "60 60 02"),
        ("FF 01", "60 FF 02"),
    ],
)
def test_golden_reply(request_: str, reply: str) -> None:
    assert Driver.fresh().send(h(request_)) == [h(reply)]


def test_write_is_never_answered_without_prn() -> None:
    device = Driver.fresh()
    assert device.create(1, 8) == h("60 01 01")
    assert device.send(h("08 01 02 03 04")) == []


def test_abort_resets_without_a_reply() -> None:
    device = Driver.fresh()
    effects = device.bootloader.request(h("0C"))
    assert effects == [Reset(ResetReason.ABORT)]
    assert device.bootloader.mode is Mode.OFF
    assert device.bootloader.feed(h("09 01 C0")) == []  # nothing is heard until it boots again


def test_invalid_object_type_poisons_write_crc_execute_until_a_valid_select() -> None:
    device = Driver.fresh()
    assert device.send(h("06 03")) == [h("60 06 05")]
    assert device.send(h("03")) == [h("60 03 05")]
    assert device.send(h("04")) == [h("60 04 05")]
    device.send(h("02 01 00"))
    assert device.send(h("08 00 00 00 00")) == [h("60 03 05")]  # a PRN notification carries the error
    assert device.send(h("06 01"))[0][:3] == h("60 06 01")
    assert device.send(h("03")) == [h("60 03 01 00 00 00 00 00 00 00 00")]


# --- command object -----------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "reply"), [(0, "60 01 03"), (257, "60 01 04"), (256, "60 01 01")])
def test_command_create_size_rules(size: int, reply: str) -> None:
    assert Driver.fresh().create(1, size) == h(reply)


def test_command_write_past_its_size_is_refused_silently() -> None:
    device = Driver.fresh()
    device.create(1, 4)
    assert device.send(h("08 01 02 03 04 05 06 07 08")) == []
    assert device.crc() == (0, 0)
    device.send(h("02 01 00"))
    device.create(1, 4)
    assert device.send(h("08 01 02 03 04 05")) == [h("60 03 03")]


def test_command_select_and_crc_track_the_bytes_received() -> None:
    device = Driver.fresh()
    device.create(1, len(DAT))
    device.write(DAT[:100])
    assert device.select(1) == (256, 100, zlib.crc32(DAT[:100]))
    assert device.crc() == (100, zlib.crc32(DAT[:100]))


def test_command_execute_before_complete_is_not_permitted() -> None:
    device = Driver.fresh()
    device.create(1, len(DAT))
    device.write(DAT[:64])
    assert device.one(h("04")) == h("60 04 08")


def test_command_execute_writes_settings_before_replying() -> None:
    device = Driver.fresh()
    device.create(1, len(DAT))
    device.write(DAT)
    assert device.bootloader.request(h("04")) == [SettingsWrite(), Send(h("60 04 01"))]


def test_accepted_init_packet_is_not_validated_again() -> None:
    device = ready()
    device.bootloader.public_key = None
    device.bootloader.flash.settings.app_version = 9  # would now fail the version check
    device.bootloader.settings.app_version = 9
    assert device.one(h("04")) == h("60 04 01")


# --- data object ------------------------------------------------------------------------------


def test_data_create_without_init_packet_is_not_permitted() -> None:
    assert Driver.fresh().create(2, 4096) == h("60 01 08")


@pytest.mark.parametrize(
    ("size", "reply"),
    [
        (0, "60 01 03"),  # size 0
        (100, "60 01 03"),  # short, but not the last object
        (8192, "60 01 04"),  # page multiple, larger than an object
        (4196, "60 01 04"),  # the whole image is a valid last object, but larger than 4096
    ],
)
def test_data_create_checks(size: int, reply: str) -> None:
    assert ready().create(2, size) == h(reply)


def test_data_create_beyond_the_image_is_not_permitted() -> None:
    device = ready()
    assert device.send_firmware(FIRMWARE[:4096]) == h("60 04 01")
    assert device.create(2, 4096) == h("60 01 08")
    assert device.create(2, 100) == h("60 01 01")  # the final, short object


def test_data_create_erases_then_replies() -> None:
    device = ready()
    assert device.bootloader.request(h("01 02 00 10 00 00")) == [Erase(1), Send(h("60 01 01"))]


def test_data_write_stalls_then_notifies() -> None:
    device = ready()
    device.send(h("02 01 00"))
    device.create(2, 4096)
    effects = device.bootloader.request(b"\x08" + FIRMWARE[:64])
    assert effects == [
        Program(16),
        Send(h("60 03 01 40 00 00 00") + struct.pack("<I", zlib.crc32(FIRMWARE[:64]))),
    ]


def test_data_write_without_init_packet_is_refused_silently() -> None:
    device = Driver.fresh()
    device.send(h("06 02"))
    assert device.send(h("08 00 00 00 00")) == []
    device.send(h("02 01 00"))
    assert device.send(h("08 00 00 00 00")) == [h("60 03 08")]


def test_data_write_past_the_object_is_refused_silently() -> None:
    device = ready()
    device.create(2, 4096)
    device.write(FIRMWARE[:4096])
    device.send(h("02 01 00"))
    assert device.send(h("08 00 00 00 00")) == [h("60 03 03")]
    assert device.crc() == (4096, zlib.crc32(FIRMWARE[:4096]))


@pytest.mark.parametrize("length", [1, 2, 3, 5, 63])
def test_write_length_not_a_word_multiple_is_dropped(length: int) -> None:
    device = ready()
    device.create(2, 4096)
    device.write(FIRMWARE[:64])
    assert device.send(b"\x08" + FIRMWARE[64 : 64 + length]) == []
    assert device.crc() == (64, zlib.crc32(FIRMWARE[:64]))
    device.send(h("02 01 00"))
    device.create(2, 4096)
    assert device.send(b"\x08" + bytes(length)) == [h("60 03 01 00 00 00 00 00 00 00 00")]


def test_data_select_reports_a_partial_object_and_create_rolls_it_back() -> None:
    device = ready()
    device.send_firmware(FIRMWARE[:4096])
    device.create(2, 100)
    device.write(FIRMWARE[4096:4160])
    assert device.select(2) == (4096, 4160, zlib.crc32(FIRMWARE[:4160]))
    device.create(2, 100)
    assert device.select(2) == (4096, 4096, zlib.crc32(FIRMWARE[:4096]))


def test_firmware_crc_runs_over_the_whole_image() -> None:
    device = ready()
    device.send_firmware(FIRMWARE[:4096])
    device.create(2, 100)
    device.write(FIRMWARE[4096:])
    assert device.crc() == (4196, zlib.crc32(FIRMWARE))


def test_data_execute_of_an_incomplete_object_is_not_permitted() -> None:
    device = ready()
    device.create(2, 4096)
    device.write(FIRMWARE[:64])
    assert device.one(h("04")) == h("60 04 08")


def test_data_execute_feeds_the_inactivity_timer() -> None:
    device = ready()
    device.create(2, 4096)
    device.write(FIRMWARE[:4096])
    assert device.bootloader.request(h("04")) == [Send(h("60 04 01")), FeedTimer()]


def test_execute_without_object_is_harmless_mid_image() -> None:
    device = ready()
    device.send(h("06 02"))
    assert device.one(h("04")) == h("60 04 01")
    assert device.resets == []


def test_execute_on_a_device_without_init_packet_runs_post_validation_and_resets() -> None:
    device = Driver.fresh()
    device.send(h("06 02"))
    effects = device.bootloader.request(h("04"))
    assert effects == [Send(h("60 04 0B 0C")), SettingsWrite(), Reset(ResetReason.DFU_COMPLETE)]


def test_last_execute_replies_then_writes_settings_then_resets() -> None:
    device = ready()
    device.send_firmware(FIRMWARE[:4096])
    device.create(2, 100)
    device.write(FIRMWARE[4096:])
    effects = device.bootloader.request(h("04"))
    assert effects == [Send(h("60 04 01")), SettingsWrite(), Reset(ResetReason.DFU_COMPLETE)]


def test_failed_post_validation_also_resets_and_clears_the_init_packet() -> None:
    device = Driver.fresh()
    other = bytes(len(FIRMWARE))
    assert device.send_init(packet(init_command(other))) == h("60 04 01")
    assert device.send_firmware(FIRMWARE) == h("60 04 0B 0C")
    assert device.resets == [ResetReason.DFU_COMPLETE]
    assert device.select(1) == (256, 0, 0)
    assert device.create(2, 4096) == h("60 01 08")
    assert device.bootloader.inventory()[-1].image_type != 0x01  # still no application


# --- packet receipt notifications (§4.4) -------------------------------------------------------


def test_prn_notifies_every_nth_write_and_create_reloads_the_counter() -> None:
    device = ready()
    device.send(h("02 02 00"))
    device.create(2, 4096)
    notes = device.write(FIRMWARE[:192])
    assert notes == [h("60 03 01 80 00 00 00") + struct.pack("<I", zlib.crc32(FIRMWARE[:128]))]
    device.create(2, 4096)
    assert device.write(FIRMWARE[:64]) == []
    assert device.write(FIRMWARE[64:128]) == [
        h("60 03 01 80 00 00 00") + struct.pack("<I", zlib.crc32(FIRMWARE[:128]))
    ]


def test_prn_counts_command_writes() -> None:
    device = Driver.fresh()
    device.send(h("02 01 00"))
    device.create(1, len(DAT))
    notes = device.write(DAT)
    assert notes[-1] == h("60 03 01") + struct.pack("<II", len(DAT), zlib.crc32(DAT))
    assert len(notes) == -(-len(DAT) // 64)


def test_prn_zero_never_notifies() -> None:
    device = ready()
    device.send(h("02 00 00"))
    device.create(2, 4096)
    assert device.write(FIRMWARE[:4096]) == []


# --- inactivity observer and resets -------------------------------------------------------------


def test_command_create_feeds_the_timer_even_when_refused() -> None:
    device = Driver.fresh()
    assert device.bootloader.request(h("01 01 00 00 00 00")) == [FeedTimer(), Send(h("60 01 03"))]
    assert device.bootloader.request(h("09 01")) == [Send(h("60 09 01 01"))]


def test_init_packet_survives_a_reset_and_firmware_restarts_from_zero() -> None:
    device = ready()
    device.send_firmware(FIRMWARE[:4096])
    device.send(h("0C"))
    assert device.resets == [ResetReason.ABORT]
    assert device.select(1) == (256, len(DAT), zlib.crc32(DAT))
    assert device.select(2) == (4096, 0, 0)
    assert device.one(h("04")) == h("60 04 01")
    assert device.send_firmware(FIRMWARE) == h("60 04 01")


def test_data_objects_work_after_a_reset_without_re_executing_the_init_packet() -> None:
    device = ready()
    device.send(h("0C"))
    assert device.send_firmware(FIRMWARE) == h("60 04 01")


def test_a_new_command_create_is_forgotten_by_a_reset() -> None:
    device = ready()
    device.create(1, 10)
    assert device.select(1) == (256, 0, 0)
    device.send(h("0C"))
    assert device.select(1) == (256, len(DAT), zlib.crc32(DAT))


def test_app_runs_after_update_unless_the_dfu_pin_is_held() -> None:
    device = ready()
    device.dfu_pin = False
    assert device.send_firmware(FIRMWARE) == h("60 04 01")
    assert device.bootloader.mode is Mode.APP
    assert device.feed(h("09 01 C0")) == []
    assert device.bootloader.boot(dfu_pin=True).mode is Mode.DFU


def test_fw_version_lists_the_installed_application() -> None:
    device = Driver.fresh()
    assert device.send_package("app_v2_signed.zip") == h("60 04 01")
    assert device.one(h("0B 02")) == h("60 0B 01 01 02 00 00 00 00 60 02 00 00 F0 00 00")
    assert device.one(h("0B 03")) == h("60 0B 01 FF") + bytes(12)


def test_received_image_is_in_flash_byte_for_byte() -> None:
    device = Driver.fresh()
    (image,) = package("app_v2_signed.zip")
    device.send_image(image.dat, image.bin)
    assert device.bootloader.memory[0x26000 : 0x26000 + len(image.bin)] == image.bin
