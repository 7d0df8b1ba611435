"""`mcu-updater package`: HEX conversion as nrfutil does it, nrfutil's option rules, keys, and the
fixtures rebuilt from their README command lines (the nrfutil-made packages are the reference)."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from mcu_updater.cli import main
from mcu_updater.dfu.hexfile import hex_to_bin, read_firmware
from mcu_updater.dfu.initpacket import FwType, decode_init_packet
from mcu_updater.dfu.keys import load_private_key, load_public_key, parse_public_key
from mcu_updater.dfu.package import SD_MAGIC, load_package
from mcu_updater.dfu.signing import verify_signature
from mcu_updater.errors import InputMissingError, PackageError
from tests.conftest import shared_fixture
from tests.packages import firmware, softdevice_firmware, write_hex

APP_START = 0x26000
BL_START = 0x78000
SD_START = 0x1000


def package(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run `mcu-updater package ARGS` in this process."""
    code = main(["package", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def test_the_cli_loads_no_packager_library_until_package_runs() -> None:
    probe = "import sys, mcu_updater.cli; print(sorted({'intelhex', 'cryptography'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# --- HEX and .bin input ------------------------------------------------------------------------


def test_hex_gaps_and_tail_are_erased_flash(tmp_path: Path) -> None:
    path = write_hex(tmp_path / "app.hex", (APP_START, b"\x01\x02\x03\x04"), (APP_START + 8, b"\x05"))
    assert read_firmware(path) == b"\x01\x02\x03\x04" + b"\xff" * 4 + b"\x05\xff\xff\xff"


def test_hex_drops_mbr_and_uicr(tmp_path: Path) -> None:
    path = write_hex(
        tmp_path / "sd.hex", (0x0, b"\xaa" * 16), (SD_START, b"\x11" * 8), (0x10001014, b"\x00\x80\x07\x00")
    )
    assert read_firmware(path) == b"\x11" * 8


def test_hex_with_an_old_info_struct_starts_after_the_larger_mbr(tmp_path: Path) -> None:
    # nrfutil takes a magic at 0x4004..0x7004 (and none at 0x3004) for a layout whose MBR ends at 0x3000.
    magic = SD_MAGIC.to_bytes(4, "little")
    path = write_hex(tmp_path / "sd.hex", (SD_START, b"\x22" * 4), (0x4004, magic))
    image = read_firmware(path)
    assert len(image) == 0x4008 - 0x3000
    assert image[0x1004:] == magic
    assert set(image[:0x1004]) == {0xFF}


def test_bin_is_taken_as_is_and_padded_to_a_word(tmp_path: Path) -> None:
    (tmp_path / "app.bin").write_bytes(b"\x01\x02\x03\x04\x05")
    assert read_firmware(tmp_path / "app.bin") == b"\x01\x02\x03\x04\x05\xff\xff\xff"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b":10000000FFFF\n", "not a valid Intel HEX"),
        (b"\xff\xfe binary", "not a valid Intel HEX"),
        (b":00000001FF\n", "no data at all"),
        (b":040000001122334452\n:00000001FF\n", "only in the MBR or UICR"),
    ],
)
def test_bad_hex_is_a_package_error(content: bytes, message: str) -> None:
    with pytest.raises(PackageError, match=message) as caught:
        hex_to_bin(content)
    assert caught.value.exit_code == 65


def test_missing_firmware_file_is_exit_66(tmp_path: Path) -> None:
    with pytest.raises(InputMissingError):
        read_firmware(tmp_path / "nope.hex")


# --- the fixtures, rebuilt from their README command lines ---------------------------------------

# (fixture, the README's nrfutil options, {input file named there: (flash address, fixture entry)}).
FIXTURE_RECIPES = [
    (
        "app_v2_signed.zip",
        "--hw-version 52 --application app_a.hex --application-version 2 --sd-req 0xAF --key-file KEY",
        {"app_a.hex": (APP_START, "app_a.bin")},
    ),
    (
        "app_v1_signed_downgrade.zip",
        "--hw-version 52 --application app_b.hex --application-version 1 --sd-req 0xAF --key-file KEY",
        {"app_b.hex": (APP_START, "app_b.bin")},
    ),
    (
        "app_v3_hw51_signed.zip",
        "--hw-version 51 --application app_b.hex --application-version 3 --sd-req 0xAF --key-file KEY",
        {"app_b.hex": (APP_START, "app_b.bin")},
    ),
    (
        "app_v2_unsigned.zip",
        "--hw-version 52 --application app_a.hex --application-version 2 --sd-req 0xAF",
        {"app_a.hex": (APP_START, "app_a.bin")},
    ),
    (
        "app_v3_sdreq_A8_signed.zip",
        "--hw-version 52 --application app_b.hex --application-version 3 --sd-req 0xA8 --key-file KEY",
        {"app_b.hex": (APP_START, "app_b.bin")},
    ),
    (
        "bl_v2_signed.zip",
        "--hw-version 52 --bootloader bl_fake.hex --bootloader-version 2 --sd-req 0xAF --key-file KEY",
        {"bl_fake.hex": (BL_START, "bl_fake.bin")},
    ),
    (
        "sd_app_signed.zip",
        "--hw-version 52 --softdevice sd_fake_s132_6.1.1.hex --application app_b.hex --application-version 3 "
        "--sd-req 0xAF --sd-id 0xB7 --key-file KEY",
        {
            "sd_fake_s132_6.1.1.hex": (SD_START, "sd_fake_s132_6.1.1.bin"),
            "app_b.hex": (APP_START, "app_b.bin"),
        },
    ),
]


@pytest.mark.parametrize(
    ("fixture", "options", "inputs"), FIXTURE_RECIPES, ids=[r[0] for r in FIXTURE_RECIPES]
)
def test_the_fixture_recipes_rebuild_the_fixtures(
    fixture: str,
    options: str,
    inputs: dict[str, tuple[int, str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reference = zipfile.ZipFile(shared_fixture(fixture))
    for name, (address, entry) in inputs.items():
        write_hex(tmp_path / name, (address, reference.read(entry)))
    monkeypatch.chdir(tmp_path)
    args = shlex.split(options.replace("KEY", str(shared_fixture("key_a.pem"))))
    code, _, err = package(capsys, "generate", *args, "ours.zip")
    assert code == 0, err
    ours = zipfile.ZipFile(tmp_path / "ours.zip")

    assert ours.read("manifest.json") == reference.read("manifest.json")
    assert sorted(ours.namelist()) == sorted(reference.namelist())
    public_key = load_public_key(shared_fixture("key_a_public.pem"))
    for name in reference.namelist():
        if name.endswith(".bin"):
            assert ours.read(name) == reference.read(name), name
        if name.endswith(".dat"):
            mine, theirs = decode_init_packet(ours.read(name)), decode_init_packet(reference.read(name))
            assert mine.command == theirs.command, name
            assert mine.signed_bytes == theirs.signed_bytes
            assert mine.signature_type == theirs.signature_type
            assert (mine.signature is None) == (theirs.signature is None)
            if mine.signature is not None:
                assert verify_signature(mine.signature, mine.signed_bytes, public_key)
    assert ("unsigned" in err) == ("--key-file" not in options)


# --- nrfutil's option rules ---------------------------------------------------------------------


def _inputs(folder: Path) -> dict[str, Path]:
    return {
        "app": write_hex(folder / "app.hex", (APP_START, firmware(8192, seed=3))),
        "bl": write_hex(folder / "bl.hex", (BL_START, firmware(4096, seed=4))),
        "sd": write_hex(folder / "sd.hex", (SD_START, softdevice_firmware())),
    }


def test_softdevice_and_bootloader_combine_into_one_image(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = _inputs(tmp_path)
    out = tmp_path / "sd_bl_app.zip"
    code, _, err = package(
        capsys,
        "generate", str(out),
        "--softdevice", str(files["sd"]), "--bootloader", str(files["bl"]), "--bootloader-version", "3",
        "--application", str(files["app"]), "--application-version", "7",
        "--hw-version", "52", "--sd-req", "0xAF", "--sd-id", "0xB7",
    )  # fmt: skip
    assert code == 0, err
    loaded = load_package(out)
    sd_bl, app = loaded.images
    assert sd_bl.kind is FwType.SOFTDEVICE_BOOTLOADER
    assert sd_bl.firmware == softdevice_firmware() + firmware(4096, seed=4)
    command = sd_bl.init.command
    assert (command.sd_size, command.bl_size, command.fw_version) == (len(softdevice_firmware()), 4096, 3)
    assert set(command.sd_req) == {0xAF, 0xB7}
    assert app.sd_req == (0xB7,)
    manifest = json.loads(zipfile.ZipFile(out).read("manifest.json"))["manifest"]
    assert manifest["softdevice_bootloader"] == {
        "bin_file": "sd_bl.bin",
        "dat_file": "sd_bl.dat",
        "info_read_only_metadata": {"bl_size": 4096, "sd_size": len(softdevice_firmware())},
    }


def test_output_is_reproducible(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = _inputs(tmp_path)
    key = str(shared_fixture("key_a.pem"))
    outputs = [tmp_path / "one.zip", tmp_path / "two.zip"]
    for out in outputs:
        common = ["--application-version", "2", "--hw-version", "52", "--sd-req", "0xAF", "--key-file", key]
        assert package(capsys, "generate", str(out), "--application", str(files["app"]), *common)[0] == 0
    assert outputs[0].read_bytes() == outputs[1].read_bytes()


APP = "--application app.hex --application-version 1"
TARGET = "--hw-version 52 --sd-req 0xAF"


@pytest.mark.parametrize(
    ("options", "exit_code", "message"),
    [
        (f"{APP} --sd-req 0xAF", 64, "--hw-version"),
        (f"{APP} --hw-version 52", 64, "--sd-req"),
        (f"--application app.hex {TARGET}", 64, "--application-version"),
        (f"--bootloader bl.hex {TARGET}", 64, "--bootloader-version"),
        (f"--bootloader bl.hex --bootloader-version 2 {APP} {TARGET}", 64, "two packages"),
        (f"--softdevice sd.hex {APP} {TARGET}", 64, "--sd-id"),
        (f"{APP} {TARGET} --sd-id 0xB7", 64, "--sd-id"),
        (f"--application app.hex --application-version 0xZZ {TARGET}", 64, "not a number"),
        (f"{APP} --hw-version 52 --sd-req 0x1FFFF", 64, "outside"),
        (f"--application-version 1 {TARGET}", 64, "without --application"),
        (TARGET, 64, "no firmware"),
        (f"--application missing.hex --application-version 1 {TARGET}", 66, "does not exist"),
        (f"--application bad.hex --application-version 1 {TARGET}", 65, "Intel HEX"),
        (f"{APP} {TARGET} --key-file pub.pem", 64, "public key"),
        (f"--softdevice notsd.hex {APP} {TARGET} --sd-id 0xB7", 65, "SoftDevice info struct"),
        (f"--softdevice sd.hex {APP} {TARGET} --sd-id 0xB6", 65, "--sd-id 0xB7"),
        (f"--softdevice sub/app.hex {APP} {TARGET} --sd-id 0xB7", 64, "both be stored as app.bin"),
    ],
)
def test_refused_options_and_inputs(
    options: str,
    exit_code: int,
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    files = _inputs(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "app.hex").write_bytes(files["sd"].read_bytes())
    (tmp_path / "bad.hex").write_text(":10000000FFFF\n")
    write_hex(tmp_path / "notsd.hex", (SD_START, firmware(0x3000, seed=5)))
    (tmp_path / "pub.pem").write_bytes(shared_fixture("key_a_public.pem").read_bytes())
    monkeypatch.chdir(tmp_path)
    code, _, err = package(capsys, "generate", "out.zip", *shlex.split(options))
    assert code == exit_code, err
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.zip").exists()
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []


def test_application_version_string_as_nrfutil(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = _inputs(tmp_path)
    out = tmp_path / "app.zip"
    code, _, err = package(
        capsys, "generate", str(out), "--application", str(files["app"]), "--application-version-string",
        "2.7.31", "--hw-version", "52", "--sd-req", "0xAF",
    )  # fmt: skip
    assert code == 0, err
    assert load_package(out).images[0].version == 20731


# --- display ------------------------------------------------------------------------------------


def test_display_shows_every_field_and_checks_signatures(capsys: pytest.CaptureFixture[str]) -> None:
    key = str(shared_fixture("key_a_public.pem"))
    code, out, _ = package(capsys, "display", str(shared_fixture("sd_app_signed.zip")), "--public-key", key)
    assert code == 0
    assert "2 images" in out
    assert "type            SOFTDEVICE" in out
    assert "FWID 0xB7, version 6.1.1" in out
    assert "sd_req          0xB7" in out  # the application's, after the new SoftDevice
    assert out.count("verifies with the given public key") == 2

    code, out, err = package(
        capsys, "display", str(shared_fixture("app_v2_unsigned.zip")), "--public-key", key
    )
    assert code == 65
    assert "none (unsigned)" in out
    assert "not signed by the key" in err


def test_display_with_another_key_fails(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    other = tmp_path / "other.pem"
    assert package(capsys, "keys", "generate", str(other))[0] == 0
    public = tmp_path / "other_pk.pem"
    assert (
        package(
            capsys, "keys", "display", str(other), "--key", "pk", "--format", "pem", "--out-file", str(public)
        )[0]
        == 0
    )
    code, out, _ = package(
        capsys, "display", str(shared_fixture("bl_v2_signed.zip")), "--public-key", str(public)
    )
    assert code == 65
    assert "does NOT verify" in out


# --- keys ---------------------------------------------------------------------------------------


def test_keys_generate_makes_a_private_p256_key_and_never_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "key.pem"
    assert package(capsys, "keys", "generate", str(path))[0] == 0
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN EC PRIVATE KEY-----")
    key = load_private_key(path)
    assert isinstance(key.curve, ec.SECP256R1)
    before = path.read_bytes()
    code, _, err = package(capsys, "keys", "generate", str(path))
    assert code == 64
    assert "already exists" in err
    assert path.read_bytes() == before


def test_keys_display_formats_read_back_as_the_same_key(capsys: pytest.CaptureFixture[str]) -> None:
    private = shared_fixture("key_a.pem")
    expected = load_public_key(shared_fixture("key_a_public.pem")).public_numbers()
    code, code_text, _ = package(capsys, "keys", "display", str(private), "--key", "pk", "--format", "code")
    assert code == 0
    assert "__ALIGN(4) const uint8_t pk[64] =" in code_text
    assert parse_public_key(code_text.encode()).public_numbers() == expected
    _, pem_text, _ = package(capsys, "keys", "display", str(private), "--key", "pk", "--format", "pem")
    assert parse_public_key(pem_text.encode()).public_numbers() == expected
    _, hex_text, _ = package(capsys, "keys", "display", str(private), "--key", "pk", "--format", "hex")
    raw = bytes.fromhex(hex_text.splitlines()[1])
    assert int.from_bytes(raw[:32], "little") == expected.x
    assert int.from_bytes(raw[32:], "little") == expected.y
    _, sk_text, err = package(capsys, "keys", "display", str(private), "--key", "sk", "--format", "hex")
    scalar = int.from_bytes(bytes.fromhex(sk_text.splitlines()[1]), "little")
    assert scalar == load_private_key(private).private_numbers().private_value
    assert "do not share" in err
    # A public key is enough to show the public key.
    public = str(shared_fixture("key_a_public.pem"))
    assert package(capsys, "keys", "display", public, "--key", "pk", "--format", "code")[1] == code_text


def test_private_key_as_code_and_public_key_as_sk_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = package(
        capsys, "keys", "display", str(shared_fixture("key_a.pem")), "--key", "sk", "--format", "code"
    )
    assert (code, "never written as C code" in err) == (64, True)
    public = str(shared_fixture("key_a_public.pem"))
    code, _, err = package(capsys, "keys", "display", public, "--key", "sk", "--format", "pem")
    assert (code, "public key" in err) == (64, True)
