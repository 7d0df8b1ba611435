"""load_package: the nrfutil fixtures, every allowed layout, and a corpus of hostile packages."""

from __future__ import annotations

import contextlib
import tempfile
import tracemalloc
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcu_updater.dfu.initpacket import FwType
from mcu_updater.dfu.keys import load_public_key
from mcu_updater.dfu.package import (
    SoftDeviceInfo,
    format_sd_version,
    load_package,
)
from mcu_updater.dfu.signing import verify_signature
from mcu_updater.errors import McuUpdaterError, PackageError
from tests.conftest import shared_fixture
from tests.packages import (
    TEST_KEY,
    Entry,
    ImageFiles,
    bomb_payload,
    firmware,
    make_image,
    package_entries,
    softdevice_firmware,
    write_package,
    write_pair,
    write_zip,
    zip_bytes,
    zipped_with,
)

APP, SD, BL = FwType.APPLICATION, FwType.SOFTDEVICE, FwType.BOOTLOADER
SD_BL = FwType.SOFTDEVICE_BOOTLOADER
PUBLIC = TEST_KEY.public_key()
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())
GIB = 1 << 30

app = make_image(APP)
app_after_sd = make_image(APP, sd_req=(0xB7,))
sd = make_image(SD)
bl = make_image(BL)
sd_bl = make_image(SD_BL)


# --- the genuine nrfutil 6.1.7 packages ---------------------------------------------------------

# name: (kinds in send order, versions, hw_version, signed, app sd_req)
FIXTURES = {
    "app_v2_signed.zip": ((APP,), (2,), 52, True, (0xAF,)),
    "app_v1_signed_downgrade.zip": ((APP,), (1,), 52, True, (0xAF,)),
    "app_v3_hw51_signed.zip": ((APP,), (3,), 51, True, (0xAF,)),
    "app_v2_unsigned.zip": ((APP,), (2,), 52, False, (0xAF,)),
    "app_v3_sdreq_A8_signed.zip": ((APP,), (3,), 52, True, (0xA8,)),
    "bl_v2_signed.zip": ((BL,), (2,), 52, True, ()),
    "sd_app_signed.zip": ((SD, APP), (6_001_001, 3), 52, True, (0xB7,)),
}


@pytest.fixture(scope="module")
def key_a() -> ec.EllipticCurvePublicKey:
    return load_public_key(shared_fixture("key_a_public.pem"))


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_loads_with_its_facts(name: str, key_a: ec.EllipticCurvePublicKey) -> None:
    kinds, versions, hw_version, signed, app_sd_req = FIXTURES[name]
    package = load_package(shared_fixture(name), public_key=key_a if signed else None)
    assert [image.kind for image in package.images] == list(kinds)
    assert [image.version for image in package.images] == list(versions)
    assert {image.hw_version for image in package.images} == {hw_version}
    assert package.is_signed is signed
    assert not package.replaces_softdevice
    assert package.ignored_entries == ()
    for image in package.images:
        assert image.init.command.sha256 == image.sha256
        assert image.size == image.init.command.image_size
        assert signed == (image.init.signature is not None)
        if signed:
            assert image.init.signature is not None
            assert verify_signature(image.init.signature, image.init.signed_bytes, key_a)
        if image.kind is APP:
            assert image.sd_req == app_sd_req


def test_sd_app_fixture_sends_the_softdevice_first(key_a: ec.EllipticCurvePublicKey) -> None:
    package = load_package(shared_fixture("sd_app_signed.zip"), public_key=key_a, hw_version=52)
    softdevice, application = package.images
    assert softdevice.softdevice == SoftDeviceInfo(
        fwid=0xB7, version=6_001_001, end_address=0x26000, sd_id=132
    )
    assert softdevice.init.command.fw_version == 0xFFFF_FFFF
    assert softdevice.name == "softdevice"
    assert softdevice.label == "softdevice 6.1.1 FWID 0xB7 (36864 B)"
    assert application.label == "application v3 (61440 B)"
    assert (application.bin_file, application.dat_file) == ("app_b.bin", "app_b.dat")


def test_fixture_facts_the_device_would_refuse_are_caught_early(key_a: ec.EllipticCurvePublicKey) -> None:
    with pytest.raises(PackageError, match=r"hw_version 51, but the target is hw_version 52"):
        load_package(shared_fixture("app_v3_hw51_signed.zip"), hw_version=52)
    with pytest.raises(PackageError, match="unsigned but a public key was given"):
        load_package(shared_fixture("app_v2_unsigned.zip"), public_key=key_a, require_signature=True)
    # A key alone verifies what is signed; only the requirement refuses what is not.
    assert not load_package(shared_fixture("app_v2_unsigned.zip"), public_key=key_a).is_signed
    with pytest.raises(PackageError, match="does not verify"):
        load_package(shared_fixture("app_v2_signed.zip"), public_key=PUBLIC)


# --- valid packages of every shape --------------------------------------------------------------


@pytest.mark.parametrize(
    ("images", "kinds"),
    [
        pytest.param((app,), (APP,), id="app"),
        pytest.param((sd,), (SD,), id="sd"),
        pytest.param((bl,), (BL,), id="bl"),
        pytest.param((sd_bl,), (SD_BL,), id="sd+bl"),
        pytest.param((app_after_sd, sd_bl), (SD_BL, APP), id="sd+bl+app"),
        pytest.param((app_after_sd, sd), (SD, APP), id="sd+app"),
    ],
)
def test_allowed_combinations_load_in_send_order(
    tmp_path: Path, images: tuple[ImageFiles, ...], kinds: tuple[FwType, ...]
) -> None:
    package = load_package(
        write_package(tmp_path / "p.zip", *images), public_key=PUBLIC, require_signature=True, hw_version=52
    )
    assert tuple(image.kind for image in package.images) == kinds
    assert package.path == tmp_path / "p.zip"


def test_softdevice_bootloader_exposes_both_parts(tmp_path: Path) -> None:
    (image,) = load_package(write_package(tmp_path / "p.zip", sd_bl)).images
    assert image.version == 1
    assert image.softdevice is not None
    assert image.softdevice.version_text == "6.1.1"
    assert image.label == f"softdevice_bootloader v1 with SoftDevice 6.1.1 (FWID 0xB7) ({image.size} B)"


@pytest.mark.parametrize("suffix", [".bin", ".dat"])
def test_bare_pair_takes_its_type_from_the_init_packet(tmp_path: Path, suffix: str) -> None:
    bin_path = write_pair(tmp_path, bl)
    package = load_package(bin_path.with_suffix(suffix), public_key=PUBLIC)
    assert [(image.kind, image.name, image.bin_file, image.dat_file) for image in package.images] == [
        (BL, "bootloader", "bl.bin", "bl.dat")
    ]


def test_uppercase_bare_pair(tmp_path: Path) -> None:
    (tmp_path / "APP.BIN").write_bytes(app.firmware)
    (tmp_path / "APP.DAT").write_bytes(app.dat)
    assert load_package(tmp_path / "APP.DAT").images[0].firmware == app.firmware


def test_deflated_entries_and_unreferenced_files_are_accepted(tmp_path: Path) -> None:
    entries = [replace(entry, deflate=True) for entry in package_entries(app)]
    path = write_zip(tmp_path / "p.zip", [*entries, Entry("README.txt", b"notes"), Entry("docs/", b"")])
    package = load_package(path, public_key=PUBLIC)
    assert package.ignored_entries == ("README.txt", "docs/")
    assert package.images[0].firmware == app.firmware


@pytest.mark.parametrize(("sd_req", "replaces"), [((0xAF,), False), ((0x00, 0xAF), True), ((0x00,), True)])
def test_app_that_erases_the_softdevice_is_flagged(
    tmp_path: Path, sd_req: tuple[int, ...], replaces: bool
) -> None:
    package = load_package(write_package(tmp_path / "p.zip", make_image(APP, sd_req=sd_req)))
    assert package.replaces_softdevice is replaces


def test_unsigned_package_loads_without_key(tmp_path: Path) -> None:
    package = load_package(write_package(tmp_path / "p.zip", make_image(APP, key=None)))
    assert not package.is_signed


def test_softdevice_info_and_version_text() -> None:
    info = SoftDeviceInfo.parse(softdevice_firmware(fwid=0xAF, version=6_001_000, end_address=0x25000))
    assert info == SoftDeviceInfo(fwid=0xAF, version=6_001_000, end_address=0x25000, sd_id=132)
    assert format_sd_version(6_001_001) == "6.1.1"
    assert format_sd_version(7_002_010) == "7.2.10"


# --- hostile packages (the whole corpus runs through the CLI in tests/test_hostile.py) -------------


def test_unsigned_package_is_refused_when_a_signature_is_required(tmp_path: Path) -> None:
    """The daemon's policy.require_signature path, which flash (a key implies it) cannot spell alone."""
    path = write_package(tmp_path / "p.zip", make_image(APP, key=None))
    with pytest.raises(PackageError, match="unsigned but a signature is required"):
        load_package(path, require_signature=True)


def test_zip_bomb_is_refused_without_inflating(tmp_path: Path) -> None:
    path = zipped_with(Entry("app.bin", payload=bomb_payload(GIB), declared_size=GIB, method=8))(tmp_path)
    tracemalloc.start()
    with pytest.raises(PackageError, match="declares"):
        load_package(path)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # Inflating even a slice of the declared gigabyte would show in the peak.
    assert peak < 8 * path.stat().st_size


# --- fuzzing: nothing but McuUpdaterError, ever -------------------------------------------------

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SMALL_APP = make_image(APP, firmware(256, seed=3))
FUZZ_BASES = (
    zip_bytes(package_entries(SMALL_APP)),
    zip_bytes([replace(entry, deflate=True) for entry in package_entries(SMALL_APP)]),
)


def load_bytes(name: str, data: bytes, **files: bytes) -> None:
    """Load ``data`` saved as ``name`` (beside ``files``); only McuUpdaterError may escape."""
    with tempfile.TemporaryDirectory() as folder:
        for other, content in files.items():
            (Path(folder) / other).write_bytes(content)
        (Path(folder) / name).write_bytes(data)
        with contextlib.suppress(McuUpdaterError):
            load_package(Path(folder) / name, public_key=PUBLIC)


@FUZZ
@given(st.binary(max_size=2048))
def test_random_bytes_as_zip(data: bytes) -> None:
    load_bytes("p.zip", data)


@FUZZ
@given(st.binary(max_size=300))
def test_random_init_packet_in_bare_pair(data: bytes) -> None:
    load_bytes("app.dat", data, **{"app.bin": SMALL_APP.firmware})


@FUZZ
@given(
    base=st.sampled_from(FUZZ_BASES),
    edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=6),
    cut=st.integers(min_value=0),
)
def test_mutated_zip(base: bytes, edits: list[tuple[int, int]], cut: int) -> None:
    data = bytearray(base)
    for position, value in edits:
        data[position % len(data)] = value
    load_bytes("p.zip", bytes(data[: len(data) - cut % 64]))


@FUZZ
@given(
    dat=st.sampled_from((SMALL_APP.dat, make_image(APP, SMALL_APP.firmware, key=None).dat)),
    edits=st.lists(st.tuples(st.integers(min_value=0), st.integers(0, 255)), min_size=1, max_size=4),
)
def test_mutated_init_packet(dat: bytes, edits: list[tuple[int, int]]) -> None:
    data = bytearray(dat)
    for position, value in edits:
        data[position % len(data)] = value
    load_bytes("app.dat", bytes(data), **{"app.bin": SMALL_APP.firmware})
