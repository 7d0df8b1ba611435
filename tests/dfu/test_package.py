"""load_package: the nrfutil fixtures, every allowed layout, and a corpus of hostile packages."""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcu_updater.dfu.initpacket import FwType, HashType, SignatureType
from mcu_updater.dfu.keys import load_public_key
from mcu_updater.dfu.package import (
    FIRMWARE_MAX,
    MANIFEST_NAME,
    PACKAGE_FILE_MAX,
    SoftDeviceInfo,
    format_sd_version,
    load_package,
)
from mcu_updater.dfu.signing import verify_signature
from mcu_updater.errors import InputMissingError, McuUpdaterError, PackageError
from tests.conftest import shared_fixture
from tests.packages import (
    TEST_KEY,
    Entry,
    ImageFiles,
    bomb_payload,
    firmware,
    flip,
    make_image,
    package_entries,
    retype_signature,
    softdevice_firmware,
    write_package,
    write_pair,
    write_zip,
    zip_bytes,
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
        load_package(shared_fixture("app_v2_unsigned.zip"), public_key=key_a)
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


@pytest.mark.parametrize(("sd_req", "replaces"), [((0xAF,), False), ((0x00, 0xAF), True), ((), True)])
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


# --- hostile and broken packages ----------------------------------------------------------------

Build = Callable[[Path], Path]


def zipped(*images: ImageFiles, **entry_options: Any) -> Build:
    """A package of ``images``, with package_entries options (manifest_json, replace_entries, drop)."""
    return lambda d: write_zip(d / "package.zip", package_entries(*images, **entry_options))


def zipped_with(*extra: Entry) -> Build:
    """A valid app package plus ``extra`` entries (or replacements, by name)."""
    return zipped(app, replace_entries=extra)


def raw_file(name: str, data: bytes) -> Build:
    def build(d: Path) -> Path:
        (d / name).write_bytes(data)
        return d / name

    return build


def bare(image: ImageFiles, drop: str = "") -> Build:
    def build(d: Path) -> Path:
        bin_path = write_pair(d, image)
        if drop:
            bin_path.with_suffix(drop).unlink()
        return bin_path.with_suffix(".dat" if drop == ".bin" else ".bin")

    return build


def sparse_file(name: str, size: int) -> Build:
    def build(d: Path) -> Path:
        with (d / name).open("wb") as file:
            file.truncate(size)
        return d / name

    return build


def directory(d: Path) -> Path:
    (d / "package.zip").mkdir()
    return d / "package.zip"


def manifest_of(document: str) -> Build:
    return zipped(app, manifest_json=document.encode())


def app_with(**fields: Any) -> Build:
    return zipped(make_image(APP, **fields))


def long_signer(data: bytes) -> bytes:
    return b"\x01" * 63


VALID_ZIP = zip_bytes(package_entries(app))
PACKAGE_OPTIONS = MappingProxyType({"public_key": PUBLIC, "hw_version": 52})


class Case(NamedTuple):
    """A broken package, the error class load_package must raise and a phrase its message must hold."""

    id: str
    build: Build
    error: type[McuUpdaterError]
    phrase: str
    options: Mapping[str, Any] = MappingProxyType({})


CORPUS = [
    Case("missing-file", lambda d: d / "absent.zip", InputMissingError, "does not exist"),
    Case("directory", directory, InputMissingError, "is a directory"),
    Case("empty-file", raw_file("p.zip", b""), PackageError, "is empty"),
    Case("not-a-zip", raw_file("p.zip", b"hello, world"), PackageError, "not a valid zip archive"),
    Case("hex-file", raw_file("app.hex", b":020000040000FA\n"), PackageError, "not a valid zip archive"),
    Case(
        "truncated-zip", raw_file("p.zip", VALID_ZIP[: len(VALID_ZIP) // 2]), PackageError, "not a valid zip"
    ),
    Case("package-too-large", sparse_file("p.zip", PACKAGE_FILE_MAX + 1), PackageError, "larger than"),
    Case("path-traversal", zipped_with(Entry("../evil.bin", b"x")), PackageError, "'../evil.bin' climbs out"),
    Case("nested-traversal", zipped_with(Entry("a/../../x", b"x")), PackageError, "climbs out"),
    Case("absolute-path", zipped_with(Entry("/etc/cron.d/x", b"x")), PackageError, "is an absolute path"),
    Case("backslash-name", zipped_with(Entry("..\\evil.bin", b"x")), PackageError, "contains a backslash"),
    Case("drive-letter", zipped_with(Entry("C:/evil.bin", b"x")), PackageError, "starts with a drive letter"),
    Case(
        "duplicate-entry",
        lambda d: write_zip(d / "p.zip", [*package_entries(app), Entry("app.bin", b"evil")]),
        PackageError,
        "'app.bin' appears twice",
    ),
    Case(
        "encrypted-entry", zipped_with(Entry("app.bin", app.firmware, flags=1)), PackageError, "is encrypted"
    ),
    Case(
        "bzip2-entry",
        zipped_with(Entry("app.bin", app.firmware, method=12)),
        PackageError,
        "compression method 12",
    ),
    Case(
        "too-many-entries",
        zipped_with(*(Entry(f"junk{i}.txt", b"") for i in range(40))),
        PackageError,
        "has 43 entries",
    ),
    Case(
        "zip-bomb",
        zipped_with(Entry("app.bin", payload=bomb_payload(GIB), declared_size=GIB, method=8)),
        PackageError,
        f"'app.bin' declares {GIB} bytes uncompressed",
    ),
    Case(
        "unreferenced-zip-bomb",
        zipped_with(Entry("extra.bin", payload=bomb_payload(GIB), declared_size=GIB, method=8)),
        PackageError,
        "'extra.bin' declares",
    ),
    Case(
        "compression-ratio",
        zipped_with(Entry("app.bin", bytes(400 * 1024), deflate=True)),
        PackageError,
        "compression ratio of",
    ),
    Case(
        "header-understates-size",
        zipped_with(Entry("app.bin", payload=bomb_payload(GIB), declared_size=len(app.firmware), method=8)),
        PackageError,
        "'app.bin' is corrupt or does not match its header",
    ),
    Case(
        "header-overstates-size",
        zipped_with(Entry("app.bin", app.firmware, declared_size=len(app.firmware) + 4)),
        PackageError,
        f"holds {len(app.firmware)} bytes but does not match its header",
    ),
    Case("no-manifest", zipped(app, drop=[MANIFEST_NAME]), PackageError, "has no manifest.json"),
    Case(
        "manifest-too-large",
        manifest_of(" " * (70 * 1024) + "{}"),
        PackageError,
        "manifest 'manifest.json' is 71682 bytes; it can be at most 65536",
    ),
    Case("manifest-not-json", manifest_of("{'manifest': }"), PackageError, "manifest.json is not valid JSON"),
    Case("manifest-not-utf8", zipped(app, manifest_json=b"\xff\xfe{}"), PackageError, "not valid JSON"),
    Case("manifest-deep-nesting", manifest_of("[" * 50_000), PackageError, "not valid JSON"),
    Case("manifest-not-object", manifest_of("[1, 2]"), PackageError, "is not a JSON object"),
    Case("manifest-key-missing", manifest_of('{"images": {}}'), PackageError, 'has no "manifest" object'),
    Case(
        "manifest-duplicate-key",
        manifest_of('{"manifest": {"application": 1, "application": 2}}'),
        PackageError,
        "'application' appears twice",
    ),
    Case(
        "unknown-image-key",
        manifest_of('{"manifest": {"external_application": {"bin_file": "a", "dat_file": "b"}}}'),
        PackageError,
        "unknown image 'external_application'",
    ),
    Case("no-images", manifest_of('{"manifest": {}}'), PackageError, "lists no images"),
    Case(
        "image-entry-not-strings",
        manifest_of('{"manifest": {"application": {"bin_file": 7, "dat_file": "app.dat"}}}'),
        PackageError,
        '"application" needs string "bin_file" and "dat_file"',
    ),
    Case(
        "image-entry-not-object",
        manifest_of('{"manifest": {"application": "app.bin"}}'),
        PackageError,
        '"application" needs string',
    ),
    Case("missing-bin", zipped(app, drop=["app.bin"]), PackageError, "names 'app.bin' for \"application\""),
    Case("missing-dat", zipped(app, drop=["app.dat"]), PackageError, "names 'app.dat' for \"application\""),
    Case("bl-plus-app", zipped(bl, app), PackageError, "combines application \\+ bootloader"),
    Case("sd-plus-bl", zipped(sd, bl), PackageError, "combines bootloader \\+ softdevice"),
    Case("sdbl-plus-sd", zipped(sd_bl, sd), PackageError, "combines softdevice \\+ softdevice_bootloader"),
    Case(
        "sdbl-metadata-mismatch",
        zipped(replace(sd_bl, metadata={"bl_size": 4096, "sd_size": 0x9000})),
        PackageError,
        "info_read_only_metadata bl_size=4096 disagrees with the init packet's bl_size=2048",
    ),
    Case(
        "sdbl-metadata-not-number",
        zipped(replace(sd_bl, metadata={"sd_size": "36864"})),
        PackageError,
        "info_read_only_metadata sd_size='36864'",
    ),
    Case(
        "sdbl-metadata-not-object",
        zipped(
            sd_bl,
            manifest_json=json.dumps(
                {
                    "manifest": {
                        "softdevice_bootloader": {**sd_bl.manifest_entry(), "info_read_only_metadata": [1]}
                    }
                }
            ).encode(),
        ),
        PackageError,
        "info_read_only_metadata is not an object",
    ),
    Case(
        "oversized-dat",
        zipped_with(Entry("app.dat", bytes(300))),
        PackageError,
        "init packet 'app.dat' is 300 bytes; it can be at most 256",
    ),
    Case(
        "undecodable-dat",
        zipped_with(Entry("app.dat", b"\xff" * 40)),
        PackageError,
        "app.dat: init packet does not decode",
    ),
    Case("empty-dat", zipped_with(Entry("app.dat", b"")), PackageError, "neither a command nor a signed"),
    Case("wrong-type-for-slot", zipped(replace(bl, slot="application")), PackageError, "type BOOTLOADER in"),
    Case("no-type", app_with(fw_type=None), PackageError, "has no valid firmware type"),
    Case(
        "hash-mismatch",
        zipped(replace(app, firmware=flip(app.firmware, 100))),
        PackageError,
        "SHA-256 of app.bin",
    ),
    Case("hash-type-crc", app_with(hash_type=HashType.CRC), PackageError, "hash type CRC"),
    Case("no-hash", app_with(hash=None), PackageError, "has no firmware hash"),
    Case("short-hash", app_with(hash=bytes(16)), PackageError, "16-byte hash"),
    Case(
        "size-mismatch",
        app_with(app_size=8192),
        PackageError,
        "app_size says 8192 bytes but app.bin holds 4096",
    ),
    Case(
        "not-word-multiple",
        zipped(make_image(APP, firmware(4094))),
        PackageError,
        "4094 bytes, not a multiple of 4",
    ),
    Case("empty-bin", zipped(make_image(APP, b"")), PackageError, "app.bin is empty"),
    Case(
        "image-too-large",
        zipped(make_image(APP, firmware(FIRMWARE_MAX + 4))),
        PackageError,
        f"'app.bin' declares {FIRMWARE_MAX + 4} bytes",
    ),
    Case(
        "bare-image-too-large",
        bare(make_image(APP, firmware(FIRMWARE_MAX + 4))),
        PackageError,
        f"larger than {FIRMWARE_MAX} bytes",
    ),
    Case(
        "sd-without-info-struct",
        zipped(make_image(SD, softdevice_firmware(magic=0))),
        PackageError,
        "no SoftDevice info struct at offset 0x2000",
    ),
    Case(
        "sd-too-short",
        zipped(make_image(SD, firmware(4096))),
        PackageError,
        "too short to hold the SoftDevice",
    ),
    Case(
        "sd-info-too-small",
        zipped(make_image(SD, softdevice_firmware(info_size=0x14))),
        PackageError,
        "info struct size 0x14 is too small",
    ),
    Case(
        "sd-end-address-short",
        zipped(make_image(SD, softdevice_firmware(end_address=0x9000))),
        PackageError,
        "end address 0x9000 lies before the end",
    ),
    Case(
        "sdbl-without-info-struct",
        zipped(make_image(SD_BL, softdevice_firmware(magic=1) + firmware(2048), sd_size=0x9000)),
        PackageError,
        "softdevice_bootloader sd_bl.bin: no SoftDevice info struct",
    ),
    Case(
        "bootloader-too-large", zipped(make_image(BL, firmware(0x6004))), PackageError, "exceeds the 0x6000"
    ),
    Case("no-fw-version", app_with(fw_version=None), PackageError, "has no fw_version"),
    Case(
        "bl-no-fw-version",
        zipped(make_image(BL, fw_version=None)),
        PackageError,
        "no fw_version, which a bootl",
    ),
    Case("no-hw-version", app_with(hw_version=None), PackageError, "has no hw_version"),
    Case(
        "hw-version-mismatch",
        app_with(hw_version=51),
        PackageError,
        "built for hw_version 51, but the target is hw_version 52",
        {"hw_version": 52},
    ),
    Case("sd-req-fffe", app_with(sd_req=(0xAF, 0xFFFE)), PackageError, "sd_req 0xFFFE"),
    Case(
        "app-ignores-new-softdevice",
        zipped(sd, app),
        PackageError,
        "requires SoftDevice FWID 0xAF, not the package's own SoftDevice 6.1.1",
    ),
    Case(
        "unsigned-with-key",
        app_with(key=None),
        PackageError,
        "unsigned but a public key was given",
        PACKAGE_OPTIONS,
    ),
    Case(
        "unsigned-but-required",
        app_with(key=None),
        PackageError,
        "unsigned but a signature is required",
        {"require_signature": True},
    ),
    Case(
        "unsigned-bootloader-with-key",
        zipped(make_image(BL, key=None)),
        PackageError,
        "bootloader bl.dat is unsigned",
        PACKAGE_OPTIONS,
    ),
    Case("wrong-key", app_with(key=OTHER_KEY), PackageError, "signature does not verify", PACKAGE_OPTIONS),
    Case("short-signature", app_with(signer=long_signer), PackageError, "63-byte signature", PACKAGE_OPTIONS),
    Case(
        "ed25519-signature",
        zipped(replace(app, dat=retype_signature(app.dat, SignatureType.ED25519))),
        PackageError,
        "signed with ED25519",
        PACKAGE_OPTIONS,
    ),
    Case(
        "init-command-too-long-to-verify",
        app_with(extra=bytes([0x52, 80]) + bytes(80)),
        PackageError,
        r"InitCommand is 1\d\d bytes",
        PACKAGE_OPTIONS,
    ),
    Case(
        "bare-pair-without-dat", bare(app, drop=".dat"), InputMissingError, "app.bin needs app.dat beside it"
    ),
    Case(
        "bare-pair-without-bin", bare(app, drop=".bin"), InputMissingError, "app.dat needs app.bin beside it"
    ),
    Case(
        "bare-pair-without-type", bare(make_image(APP, fw_type=None)), PackageError, "no valid firmware type"
    ),
]


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id) for case in CORPUS])
def test_hostile_package_is_refused(tmp_path: Path, case: Case) -> None:
    with pytest.raises(McuUpdaterError) as caught:
        load_package(case.build(tmp_path), **case.options)
    assert type(caught.value) is case.error
    assert re.search(case.phrase, caught.value.message), caught.value.message
    assert caught.value.hint
    assert "\n" not in str(caught.value)


def test_corpus_is_large_and_distinct() -> None:
    assert len({case.id for case in CORPUS}) == len(CORPUS) >= 30


def test_refusals_name_the_fix(tmp_path: Path) -> None:
    hints = {
        "hw-version-mismatch": "--hw-version 52",
        "sd-req-fffe": "--sd-req <FWID",
        "init-command-too-long-to-verify": "rebuild without --app-boot-validation VALIDATE_ECDSA_P256_SHA256",
        "app-ignores-new-softdevice": "--sd-id 0xB7",
    }
    cases = {case.id: case for case in CORPUS}
    for name, hint in hints.items():
        folder = tmp_path / name
        folder.mkdir()
        with pytest.raises(PackageError) as caught:
            load_package(cases[name].build(folder), **cases[name].options)
        assert hint in caught.value.hint


def test_zip_bomb_is_refused_without_inflating(tmp_path: Path) -> None:
    path = zipped_with(Entry("app.bin", payload=bomb_payload(GIB), declared_size=GIB, method=8))(tmp_path)
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(PackageError, match="declares"):
        load_package(path)
    elapsed = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert elapsed < 1.0
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
