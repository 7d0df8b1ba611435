"""`mcu-updater package` against Nordic's nrfutil 6.1.7 (`nrfutil pkg`, `nrfutil keys`, `nrfutil dfu serial`).

For the same HEX/bin inputs and options both tools make a package; the manifests, the .bin files and
the decoded init packets must be equal (the signatures differ, nrfutil signs with a random nonce, so
both must verify instead), and `nrfutil pkg display` must print the same for both. Our packages are
then uploaded by `nrfutil dfu serial` to `mcu-updater simulate` over a real pty, and keys made by
either tool must sign packages with the other and be displayed the same way.
"""

from __future__ import annotations

import re
import shlex
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from mcu_updater.cli import main
from mcu_updater.dfu.initpacket import decode_init_packet
from mcu_updater.dfu.keys import load_private_key, parse_public_key
from mcu_updater.dfu.signing import verify_signature
from mcu_updater.dfu.wire import ImageType
from tests.conftest import shared_fixture
from tests.nrfutil import dfu_serial, nrfutil, run_nrfutil
from tests.packages import firmware, softdevice_firmware, write_hex
from tests.simproc import FAST_BAUD, SimulatorProcess, query_inventory

pytestmark = [pytest.mark.interop, pytest.mark.timeout(400)]

KEY = "--key-file {key}"
# nrfutil pkg generate options (after --hw-version 52), each also given to `mcu-updater package generate`.
CASES = {
    "app": "--application app.hex --application-version 2 --sd-req 0xAF " + KEY,
    "app-unsigned": "--application app.hex --application-version 2 --sd-req 0xAF",
    "app-bin-several-sd-req": "--application raw_app.bin --application-version 0x10 --sd-req 0xB7,0xAF,0xA8 "
    + KEY,
    "app-version-string": "--application app.hex --application-version-string 1.2.3 --sd-req 0xAF " + KEY,
    "bl": "--bootloader bl.hex --bootloader-version 2 --sd-req 0xAF " + KEY,
    "sd": "--softdevice sd.hex --sd-req 0xAF " + KEY,
    "sd-app": "--softdevice sd.hex --application app.hex --application-version 3 --sd-req 0xAF --sd-id 0xB7 "
    + KEY,
    "sd-bl": "--softdevice sd.hex --bootloader bl.hex --bootloader-version 3 --sd-req 0xAF,0xB7 " + KEY,
    "sd-bl-app": "--softdevice sd.hex --bootloader bl.hex --bootloader-version 3 --application app.hex "
    "--application-version 4 --sd-req 0xAF --sd-id 0xB7 " + KEY,
}


@dataclass(frozen=True)
class Inputs:
    folder: Path
    key: Path


@pytest.fixture
def inputs(tmp_path: Path) -> Inputs:
    """Small synthetic images at realistic addresses: an app with a gap (filled as erased flash) at
    0x26000, a bootloader at 0x78000, a SoftDevice (with its info struct) from 0x1000."""
    write_hex(tmp_path / "app.hex", (0x26000, firmware(6000, seed=11)), (0x27800, firmware(2002, seed=12)))
    (tmp_path / "raw_app.bin").write_bytes(firmware(5001, seed=13))
    write_hex(tmp_path / "bl.hex", (0x78000, firmware(12 * 1024, seed=14)))
    write_hex(tmp_path / "sd.hex", (0x1000, softdevice_firmware()))
    return Inputs(tmp_path, shared_fixture("key_a.pem"))


def _ours(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    code = main(["package", *args])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def _theirs(*args: str) -> str:
    done = run_nrfutil(*args)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def _generate_both(
    inputs: Inputs, options: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> tuple[Path, Path]:
    monkeypatch.chdir(inputs.folder)
    args = ["--hw-version", "52", *shlex.split(options.format(key=inputs.key))]
    _ours(capsys, "generate", "ours.zip", *args)
    _theirs("pkg", "generate", *args, "theirs.zip")
    return inputs.folder / "ours.zip", inputs.folder / "theirs.zip"


def _nrfutil_display(package: Path) -> str:
    """`nrfutil pkg display` without the lines that name the file or hold the signature."""
    text = _theirs("pkg", "display", str(package))
    return "\n".join(
        line for line in text.splitlines() if "DFU Package: <" not in line and "signature (" not in line
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_inputs_give_the_same_package(
    case: str, inputs: Inputs, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    nrfutil()
    ours_path, theirs_path = _generate_both(inputs, CASES[case], capsys, monkeypatch)
    ours, theirs = zipfile.ZipFile(ours_path), zipfile.ZipFile(theirs_path)
    assert ours.read("manifest.json") == theirs.read("manifest.json")
    assert sorted(ours.namelist()) == sorted(theirs.namelist())
    public_key = load_private_key(inputs.key).public_key()
    for name in theirs.namelist():
        if name.endswith(".bin"):
            assert ours.read(name) == theirs.read(name), name
        elif name.endswith(".dat"):
            mine, reference = decode_init_packet(ours.read(name)), decode_init_packet(theirs.read(name))
            assert mine.command == reference.command, name
            assert mine.signed_bytes == reference.signed_bytes, name
            assert mine.signature_type == reference.signature_type
            for packet in (mine, reference):
                signed = "{key}" in CASES[case]
                assert packet.is_signed == signed
                if packet.signature is not None:
                    assert verify_signature(packet.signature, packet.signed_bytes, public_key)

    assert _nrfutil_display(ours_path) == _nrfutil_display(theirs_path)
    if "{key}" in CASES[case]:
        key_option = ["--public-key", str(shared_fixture("key_a_public.pem"))]
        shown = _ours(capsys, "display", str(theirs_path), *key_option)
        assert shown.count("verifies with the given public key") == len(theirs.namelist()) // 2
    else:
        assert _ours(capsys, "display", str(theirs_path)).count("none (unsigned)") == 1


# Our packages, in order, on one fresh device (S132 6.1.0 = FWID 0xAF, bootloader v1, key_a required).
UPLOADS = [
    ("app", "--application app.hex --application-version 2 --sd-req 0xAF"),
    ("bl", "--bootloader bl.hex --bootloader-version 2 --sd-req 0xAF"),
    (
        "sd-app",
        "--softdevice sd.hex --application app.hex --application-version 3 --sd-req 0xAF --sd-id 0xB7",
    ),
    ("sd-bl", "--softdevice sd.hex --bootloader bl.hex --bootloader-version 3 --sd-req 0xB7"),
    (
        "sd-bl-app",
        "--softdevice sd.hex --bootloader bl.hex --bootloader-version 4 --application app.hex "
        "--application-version 5 --sd-req 0xB7 --sd-id 0xB7",
    ),
    ("sd", "--softdevice sd.hex --sd-req 0xB7"),
]


def test_nrfutil_uploads_our_packages_to_the_simulator(
    inputs: Inputs, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    nrfutil()  # built before the simulator starts, so a first build cannot eat into its time
    monkeypatch.chdir(inputs.folder)
    for name, options in UPLOADS:
        _ours(
            capsys,
            "generate",
            f"{name}.zip",
            "--hw-version",
            "52",
            "--key-file",
            str(inputs.key),
            *options.split(),
        )
    sim_args = ["--public-key", str(shared_fixture("key_a_public.pem"))]
    with SimulatorProcess(inputs.folder / "state.json", *sim_args) as sim:
        for name, _ in UPLOADS:
            done = dfu_serial(inputs.folder / f"{name}.zip", sim.port, FAST_BAUD)
            output = done.stdout + done.stderr
            assert done.returncode == 0, f"{name}: {output[-800:]}"
            assert "Device programmed" in output
        inventory = query_inventory(sim.port)
        sim.stop()
    bootloader = inventory.find(ImageType.BOOTLOADER)
    softdevice = inventory.find(ImageType.SOFTDEVICE)
    application = inventory.find(ImageType.APPLICATION)
    assert bootloader is not None
    assert bootloader.version == 4
    assert softdevice is not None
    assert softdevice.version == 6_001_001
    assert application is not None
    assert (application.version, application.address) == (5, 0x26000)


@pytest.mark.parametrize("fixture", ["app_v2_signed.zip", "bl_v2_signed.zip", "sd_app_signed.zip"])
def test_nrfutil_and_we_display_the_fixtures_alike(fixture: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = shared_fixture(fixture)
    theirs = _theirs("pkg", "display", str(path))
    ours = _ours(capsys, "display", str(path), "--public-key", str(shared_fixture("key_a_public.pem")))
    for field in ("fw_version", "sd_req", "sd_size", "bl_size", "app_size"):
        their_values = [
            line.split(":", 1)[1].strip() for line in theirs.splitlines() if f"|- {field}" in line
        ]
        our_values = [line.split(None, 1)[1] for line in ours.splitlines() if line.strip().startswith(field)]
        assert their_values == our_values, field


def _without_generator_line(code: str) -> str:
    return re.sub(r"/\* This file was automatically generated by [^\n]*\*/\n", "", code)


@pytest.mark.parametrize("maker", ["ours", "nrfutil"])
def test_keys_work_in_both_tools_and_display_alike(
    maker: str, inputs: Inputs, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    nrfutil()
    key = inputs.folder / "new_key.pem"
    if maker == "ours":
        _ours(capsys, "keys", "generate", str(key))
    else:
        _theirs("keys", "generate", str(key))
    inputs = Inputs(inputs.folder, key)
    ours_path, theirs_path = _generate_both(inputs, CASES["app"], capsys, monkeypatch)
    their_pem = _theirs("keys", "display", str(key), "--key", "pk", "--format", "pem")
    public_key = parse_public_key(their_pem.strip().encode())
    for path in (ours_path, theirs_path):
        packet = decode_init_packet(zipfile.ZipFile(path).read("app.dat"))
        assert packet.signature is not None
        assert verify_signature(packet.signature, packet.signed_bytes, public_key)

    def both(key_kind: str, key_format: str) -> tuple[str, str]:
        out = inputs.folder / f"{key_kind}.{key_format}"
        options = ["--key", key_kind, "--format", key_format]
        _theirs("keys", "display", str(key), *options, "--out_file", str(out))
        return _ours(capsys, "keys", "display", str(key), *options), out.read_text()

    ours_code, theirs_code = both("pk", "code")
    assert "__ALIGN(4) const uint8_t pk[64]" in ours_code
    assert _without_generator_line(ours_code) == _without_generator_line(theirs_code)
    ours_hex, theirs_hex = both("pk", "hex")
    assert ours_hex.strip() == theirs_hex.strip()
    ours_pem, theirs_pem = both("pk", "pem")  # the same key; nrfutil wraps base64 at 76 columns, not 64
    assert parse_public_key(ours_pem.encode()).public_numbers() == public_key.public_numbers()
    assert parse_public_key(theirs_pem.encode()).public_numbers() == public_key.public_numbers()
    ours_sk, theirs_sk = both("sk", "hex")
    assert ours_sk.strip() == theirs_sk.split("\n\n", 1)[1].strip()  # nrfutil puts a warning first
