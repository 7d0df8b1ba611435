"""The expected outcomes of ../shared/fixtures/README.md, rows in order on one device, per profile."""

from __future__ import annotations

import hashlib

import pytest

from mcu_updater.dfu.wire import FwVersionReply, ImageType
from mcu_updater.sim.validation import Profile
from tests.sim.helpers import Driver, h, package

OK = "60 04 01"
SDK_ROWS = [
    ("app_v2_signed.zip", OK),
    ("app_v1_signed_downgrade.zip", "60 04 0B 05"),
    ("app_v3_hw51_signed.zip", "60 04 0B 06"),
    ("app_v2_unsigned.zip", "60 04 0B 08"),
    ("app_v3_sdreq_A8_signed.zip", "60 04 0B 07"),
    ("bl_v2_signed.zip", OK),
    ("bl_v2_signed.zip", "60 04 0B 05"),
    ("sd_app_signed.zip", OK),
    ("app_v2_signed.zip", "60 04 0B 07"),  # hw_version, then sd_req, then fw_version
]
AZURE_ROWS = [
    ("app_v2_signed.zip", OK),
    ("app_v1_signed_downgrade.zip", OK),
    ("app_v3_hw51_signed.zip", "60 04 0B 06"),
    ("app_v2_unsigned.zip", OK),
    ("app_v2_unsigned.zip", "60 04 0B 05"),
    ("app_v3_sdreq_A8_signed.zip", "60 04 0B 07"),
    ("bl_v2_signed.zip", OK),
    ("bl_v2_signed.zip", "60 04 0B 05"),
    ("sd_app_signed.zip", OK),
]
FINAL = [
    FwVersionReply(ImageType.BOOTLOADER, 2, 0x78000, 0x6000),
    FwVersionReply(ImageType.SOFTDEVICE, 6001001, 0x1000, 0x26000),
    FwVersionReply(ImageType.APPLICATION, 3, 0x26000, 61440),
]


@pytest.mark.parametrize(("profile", "rows"), [(Profile.SDK, SDK_ROWS), (Profile.AZURE_SAMPLE, AZURE_ROWS)])
def test_rows_in_order(profile: Profile, rows: list[tuple[str, str]]) -> None:
    device = Driver.fresh(profile=profile)
    for number, (name, reply) in enumerate(rows, 1):
        assert device.send_package(name) == h(reply), f"row {number} {name}"
        if number == 1:
            assert device.bootloader.firmware_version(2) == FwVersionReply(
                ImageType.APPLICATION, 2, 0x26000, 61440
            )
    assert device.bootloader.inventory() == FINAL


def test_sd_app_package_resets_between_its_two_images() -> None:
    device = Driver.fresh()
    assert device.send_package("sd_app_signed.zip") == h(OK)
    assert [boot.activated for boot in device.boots[1:]] == ["softdevice", "application"]
    sd, app = package("sd_app_signed.zip")
    assert [(r.kind, r.version, r.sha256, r.activated) for r in device.bootloader.flash.images] == [
        ("softdevice", 6001001, hashlib.sha256(sd.bin).hexdigest(), True),
        ("application", 3, hashlib.sha256(app.bin).hexdigest(), True),
    ]


def test_unsigned_package_succeeds_on_a_device_that_does_not_require_signatures() -> None:
    assert Driver.fresh(profile=Profile.AZURE_SAMPLE).send_package("app_v2_unsigned.zip") == h(OK)
