"""The state file (§12): what survives, atomic writes, clear errors."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import pytest

from mcu_updater.sim.bootloader import Bootloader
from mcu_updater.sim.state import (
    S132_6_1_0,
    BankCode,
    CorruptStateError,
    FlashState,
    SoftDevice,
    StateFile,
    StateWriteError,
)
from tests.sim.helpers import Driver, h, package


def test_missing_file_is_a_fresh_device(tmp_path: Path) -> None:
    state = StateFile(tmp_path / "none.json").load()
    assert state == FlashState()
    assert state.softdevice == S132_6_1_0
    assert (state.settings.bootloader_version, state.settings.app_version) == (1, 0)
    assert state.settings.bank_0.code == BankCode.INVALID


def test_round_trip_after_updates(tmp_path: Path) -> None:
    device = Driver.fresh()
    assert device.send_package("sd_app_signed.zip") == h("60 04 01")
    (app,) = package("app_v2_signed.zip")
    device.send_init(app.dat)  # leaves an accepted (not yet used) init packet in the settings
    store = StateFile(tmp_path / "state.json")
    store.save(device.bootloader.flash)
    assert store.load() == device.bootloader.flash


def test_json_is_readable(tmp_path: Path) -> None:
    store = StateFile(tmp_path / "state.json")
    device = Driver.fresh()
    device.send_package("app_v2_signed.zip")
    store.save(device.bootloader.flash)
    data = json.loads(store.path.read_text())
    assert data["settings"]["bank_0"] == {
        "code": "VALID_APP",
        "size": 61440,
        "crc": zlib.crc32(package("app_v2_signed.zip")[0].bin),
        "softdevice": None,
    }
    assert data["softdevice"] == {"fwid": 0xAF, "version": 6001000, "end": 0x26000, "sd_id": 132}
    assert data["images"][0]["kind"] == "application"
    assert data["images"][0]["activated"] is True


def test_save_replaces_atomically(tmp_path: Path) -> None:
    store = StateFile(tmp_path / "state.json")
    store.save(FlashState())
    store.path.chmod(0o444)  # rename still replaces a read-only file: the old one is never opened
    changed = FlashState(softdevice=None)
    store.save(changed)
    assert store.load() == changed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


def test_missing_directory_is_an_io_error(tmp_path: Path) -> None:
    with pytest.raises(StateWriteError) as caught:
        StateFile(tmp_path / "no" / "state.json").save(FlashState())
    assert caught.value.exit_code == 74


@pytest.mark.parametrize(
    "content",
    ["garbage", "{}", '{"format": "mcu-updater-sim-state/1"}', '{"format": "other", "settings": {}}', "[]"],
)
def test_corrupt_file_is_a_usage_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "state.json"
    path.write_text(content)
    with pytest.raises(CorruptStateError) as caught:
        StateFile(path).load()
    assert caught.value.exit_code == 64
    assert str(path) in caught.value.message


def test_corrupt_field_is_a_usage_error(tmp_path: Path) -> None:
    store = StateFile(tmp_path / "state.json")
    store.save(FlashState())
    data = json.loads(store.path.read_text())
    data["settings"]["bank_0"]["code"] = "NOT_A_CODE"
    store.path.write_text(json.dumps(data))
    with pytest.raises(CorruptStateError):
        store.load()


def test_a_reloaded_device_resumes_with_the_saved_init_packet(tmp_path: Path) -> None:
    store = StateFile(tmp_path / "state.json")
    (app,) = package("app_v2_signed.zip")
    first = Driver.fresh()
    assert first.send_init(app.dat) == h("60 04 01")
    first.send_firmware(app.bin[:8192])
    store.save(first.bootloader.flash)

    second = Driver(Bootloader(store.load()))
    second.bootloader.boot(dfu_pin=True)
    assert second.select(1) == (256, len(app.dat), zlib.crc32(app.dat))
    assert second.select(2) == (4096, 0, 0)
    assert second.send_firmware(app.bin) == h("60 04 01")
    assert second.bootloader.firmware_version(2).version == 2


def test_softdevice_info_struct_parse() -> None:
    (sd, _) = package("sd_app_signed.zip")
    assert SoftDevice.from_image(sd.bin) == SoftDevice(fwid=0xB7, version=6001001, end=0x26000, sd_id=132)
    assert SoftDevice.from_image(bytes(0x3000)) is None
    short = bytearray(sd.bin)
    short[0x2000] = 0x14  # the struct ends before the version field
    assert SoftDevice.from_image(bytes(short)) == SoftDevice(fwid=0xB7, version=0, end=0x26000, sd_id=132)
