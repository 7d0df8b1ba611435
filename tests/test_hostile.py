"""The hostile-input corpus: every bad package, key and configuration through the real command line.

Each case runs ``mcu-updater flash`` (or ``check-config`` / ``run``) as a child process against the
virtual nRF52 on a real pty and asserts one line on stderr naming the cause and the fix, the documented
exit code, no traceback, and that the device received not a single byte. The device-side cases answer
from a scripted bootloader on a pty instead (replies garbled, truncated, to the wrong request, ...).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import struct
import textwrap
import threading
import tty
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mcu_updater.dfu.initpacket import FwType, HashType, SignatureType
from mcu_updater.dfu.package import FIRMWARE_MAX, MANIFEST_NAME, PACKAGE_FILE_MAX
from mcu_updater.dfu.slip import SlipDecoder, encode
from tests.conftest import shared_fixture
from tests.packages import (
    APP_IMAGE,
    TEST_KEY,
    Build,
    Entry,
    app_with,
    bare,
    bomb_payload,
    directory,
    firmware,
    flip,
    make_image,
    manifest_of,
    package_entries,
    raw_file,
    retype_signature,
    softdevice_firmware,
    sparse_file,
    write_package,
    write_zip,
    zip_bytes,
    zipped,
    zipped_with,
)
from tests.simproc import FAST_BAUD, SimulatorThread, run_cli

pytestmark = pytest.mark.timeout(120)

APP, SD, BL = FwType.APPLICATION, FwType.SOFTDEVICE, FwType.BOOTLOADER
SD_BL = FwType.SOFTDEVICE_BOOTLOADER
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())
GIB = 1 << 30
KEY = "{key}"
"""Stands for the PEM file of TEST_KEY's public key in a case's arguments."""
WITH_KEY = ("--public-key", KEY, "--hw-version", "52")
REBUILD = "rebuild the package with nrfutil pkg generate"

app = APP_IMAGE
app_after_sd = make_image(APP, sd_req=(0xB7,))
sd = make_image(SD)
bl = make_image(BL)
sd_bl = make_image(SD_BL)
VALID_ZIP = zip_bytes(package_entries(app))


def long_signer(data: bytes) -> bytes:
    return b"\x01" * 63


@dataclass(frozen=True)
class Case:
    """A bad package: the exit code ``flash`` must return and a pattern its one stderr line must hold."""

    id: str
    build: Build
    code: int
    phrase: str
    args: tuple[str, ...] = ()
    fix: str = REBUILD
    """What the line must tell the user to do."""


CORPUS = [
    Case("missing-file", lambda d: d / "absent.zip", 66, "does not exist"),
    Case("directory", directory, 66, "is a directory"),
    Case("empty-file", raw_file("p.zip", b""), 65, "is empty"),
    Case("not-a-zip", raw_file("p.zip", b"hello, world"), 65, "not a valid zip archive"),
    Case("hex-file", raw_file("app.hex", b":020000040000FA\n"), 65, "not a valid zip archive"),
    Case("truncated-zip", raw_file("p.zip", VALID_ZIP[: len(VALID_ZIP) // 2]), 65, "not a valid zip"),
    Case("package-too-large", sparse_file("p.zip", PACKAGE_FILE_MAX + 1), 65, "larger than"),
    Case("path-traversal", zipped_with(Entry("../evil.bin", b"x")), 65, "'../evil.bin' climbs out"),
    Case("nested-traversal", zipped_with(Entry("a/../../x", b"x")), 65, "climbs out"),
    Case("absolute-path", zipped_with(Entry("/etc/cron.d/x", b"x")), 65, "is an absolute path"),
    Case("backslash-name", zipped_with(Entry("..\\evil.bin", b"x")), 65, "contains a backslash"),
    Case("drive-letter", zipped_with(Entry("C:/evil.bin", b"x")), 65, "starts with a drive letter"),
    Case(
        "duplicate-entry",
        lambda d: write_zip(d / "p.zip", [*package_entries(app), Entry("app.bin", b"evil")]),
        65,
        "'app.bin' appears twice",
    ),
    Case("encrypted-entry", zipped_with(Entry("app.bin", app.firmware, flags=1)), 65, "is encrypted"),
    Case(
        "bzip2-entry",
        zipped_with(Entry("app.bin", app.firmware, method=12)),
        65,
        "compression method 12",
    ),
    Case(
        "too-many-entries",
        zipped_with(*(Entry(f"junk{i}.txt", b"") for i in range(40))),
        65,
        "has 43 entries",
    ),
    Case(
        "zip-bomb",
        zipped_with(Entry("app.bin", payload=bomb_payload(GIB), declared_size=GIB, method=8)),
        65,
        f"'app.bin' declares {GIB} bytes uncompressed",
    ),
    Case(
        "unreferenced-zip-bomb",
        zipped_with(Entry("extra.bin", payload=bomb_payload(GIB), declared_size=GIB, method=8)),
        65,
        "'extra.bin' declares",
    ),
    Case(
        "compression-ratio",
        zipped_with(Entry("app.bin", bytes(400 * 1024), deflate=True)),
        65,
        "compression ratio of",
    ),
    Case(
        "header-understates-size",
        zipped_with(Entry("app.bin", payload=bomb_payload(GIB), declared_size=len(app.firmware), method=8)),
        65,
        "'app.bin' is corrupt or does not match its header",
    ),
    Case(
        "header-overstates-size",
        zipped_with(Entry("app.bin", app.firmware, declared_size=len(app.firmware) + 4)),
        65,
        f"holds {len(app.firmware)} bytes but does not match its header",
    ),
    Case("no-manifest", zipped(app, drop=[MANIFEST_NAME]), 65, "has no manifest.json"),
    Case(
        "manifest-too-large",
        manifest_of(" " * (70 * 1024) + "{}"),
        65,
        "manifest 'manifest.json' is 71682 bytes; it can be at most 65536",
    ),
    Case("manifest-not-json", manifest_of("{'manifest': }"), 65, "manifest.json is not valid JSON"),
    Case("manifest-not-utf8", zipped(app, manifest_json=b"\xff\xfe{}"), 65, "not valid JSON"),
    Case("manifest-deep-nesting", manifest_of("[" * 50_000), 65, "not valid JSON"),
    Case("manifest-not-object", manifest_of("[1, 2]"), 65, "is not a JSON object"),
    Case("manifest-key-missing", manifest_of('{"images": {}}'), 65, 'has no "manifest" object'),
    Case(
        "manifest-duplicate-key",
        manifest_of('{"manifest": {"application": 1, "application": 2}}'),
        65,
        "'application' appears twice",
    ),
    Case(
        "unknown-image-key",
        manifest_of('{"manifest": {"external_application": {"bin_file": "a", "dat_file": "b"}}}'),
        65,
        "unknown image 'external_application'",
    ),
    Case("no-images", manifest_of('{"manifest": {}}'), 65, "lists no images"),
    Case(
        "image-entry-not-strings",
        manifest_of('{"manifest": {"application": {"bin_file": 7, "dat_file": "app.dat"}}}'),
        65,
        '"application" needs string "bin_file" and "dat_file"',
    ),
    Case(
        "image-entry-not-object",
        manifest_of('{"manifest": {"application": "app.bin"}}'),
        65,
        '"application" needs string',
    ),
    Case("missing-bin", zipped(app, drop=["app.bin"]), 65, "names 'app.bin' for \"application\""),
    Case("missing-dat", zipped(app, drop=["app.dat"]), 65, "names 'app.dat' for \"application\""),
    Case("bl-plus-app", zipped(bl, app), 65, "combines application \\+ bootloader"),
    Case("sd-plus-bl", zipped(sd, bl), 65, "combines bootloader \\+ softdevice"),
    Case("sdbl-plus-sd", zipped(sd_bl, sd), 65, "combines softdevice \\+ softdevice_bootloader"),
    Case(
        "sdbl-metadata-mismatch",
        zipped(replace(sd_bl, metadata={"bl_size": 4096, "sd_size": 0x9000})),
        65,
        "info_read_only_metadata bl_size=4096 disagrees with the init packet's bl_size=2048",
    ),
    Case(
        "sdbl-metadata-not-number",
        zipped(replace(sd_bl, metadata={"sd_size": "36864"})),
        65,
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
        65,
        "info_read_only_metadata is not an object",
    ),
    Case(
        "oversized-dat",
        zipped_with(Entry("app.dat", bytes(300))),
        65,
        "init packet 'app.dat' is 300 bytes; it can be at most 256",
    ),
    Case(
        "undecodable-dat",
        zipped_with(Entry("app.dat", b"\xff" * 40)),
        65,
        "app.dat: init packet does not decode",
    ),
    Case("empty-dat", zipped_with(Entry("app.dat", b"")), 65, "neither a command nor a signed"),
    Case("wrong-type-for-slot", zipped(replace(bl, slot="application")), 65, "type BOOTLOADER in"),
    Case("no-type", app_with(fw_type=None), 65, "has no valid firmware type"),
    Case(
        "hash-mismatch",
        zipped(replace(app, firmware=flip(app.firmware, 100))),
        65,
        "SHA-256 of app.bin",
    ),
    Case("hash-type-crc", app_with(hash_type=HashType.CRC), 65, "hash type CRC"),
    Case("no-hash", app_with(hash=None), 65, "has no firmware hash"),
    Case("short-hash", app_with(hash=bytes(16)), 65, "16-byte hash"),
    Case(
        "size-mismatch",
        app_with(app_size=8192),
        65,
        "app_size says 8192 bytes but app.bin holds 4096",
    ),
    Case(
        "not-word-multiple",
        zipped(make_image(APP, firmware(4094))),
        65,
        "4094 bytes, not a multiple of 4",
    ),
    Case("empty-bin", zipped(make_image(APP, b"")), 65, "app.bin is empty"),
    Case(
        "image-too-large",
        zipped(make_image(APP, firmware(FIRMWARE_MAX + 4))),
        65,
        f"'app.bin' declares {FIRMWARE_MAX + 4} bytes",
    ),
    Case(
        "bare-image-too-large",
        bare(make_image(APP, firmware(FIRMWARE_MAX + 4))),
        65,
        f"larger than {FIRMWARE_MAX} bytes",
    ),
    Case(
        "sd-without-info-struct",
        zipped(make_image(SD, softdevice_firmware(magic=0))),
        65,
        "no SoftDevice info struct at offset 0x2000",
    ),
    Case(
        "sd-too-short",
        zipped(make_image(SD, firmware(4096))),
        65,
        "too short to hold the SoftDevice",
    ),
    Case(
        "sd-info-too-small",
        zipped(make_image(SD, softdevice_firmware(info_size=0x14))),
        65,
        "info struct size 0x14 is too small",
    ),
    Case(
        "sd-end-address-short",
        zipped(make_image(SD, softdevice_firmware(end_address=0x9000))),
        65,
        "end address 0x9000 lies before the end",
    ),
    Case(
        "sdbl-without-info-struct",
        zipped(make_image(SD_BL, softdevice_firmware(magic=1) + firmware(2048), sd_size=0x9000)),
        65,
        "softdevice_bootloader sd_bl.bin: no SoftDevice info struct",
    ),
    Case("bootloader-too-large", zipped(make_image(BL, firmware(0x6004))), 65, "exceeds the 0x6000"),
    Case("no-fw-version", app_with(fw_version=None), 65, "has no fw_version"),
    Case(
        "bl-no-fw-version",
        zipped(make_image(BL, fw_version=None)),
        65,
        "no fw_version, which a bootl",
    ),
    Case("no-hw-version", app_with(hw_version=None), 65, "has no hw_version"),
    Case(
        "hw-version-mismatch",
        app_with(hw_version=51),
        65,
        "built for hw_version 51, but the target is hw_version 52",
        ("--hw-version", "52"),
    ),
    Case("sd-req-fffe", app_with(sd_req=(0xAF, 0xFFFE)), 65, "sd_req 0xFFFE"),
    Case(
        "app-ignores-new-softdevice",
        zipped(sd, app),
        65,
        "requires SoftDevice FWID 0xAF, not the package's own SoftDevice 6.1.1",
    ),
    Case(
        "unsigned-with-key",
        app_with(key=None),
        65,
        "unsigned but a public key was given",
        WITH_KEY,
    ),
    Case(
        "unsigned-bootloader-with-key",
        zipped(make_image(BL, key=None)),
        65,
        "bootloader bl.dat is unsigned",
        WITH_KEY,
    ),
    Case("wrong-key", app_with(key=OTHER_KEY), 65, "signature does not verify", WITH_KEY),
    Case("short-signature", app_with(signer=long_signer), 65, "63-byte signature", WITH_KEY),
    Case(
        "ed25519-signature",
        zipped(replace(app, dat=retype_signature(app.dat, SignatureType.ED25519))),
        65,
        "signed with ED25519",
        WITH_KEY,
    ),
    Case(
        "init-command-too-long-to-verify",
        app_with(extra=bytes([0x52, 80]) + bytes(80)),
        65,
        r"InitCommand is 1\d\d bytes",
        WITH_KEY,
    ),
    Case("bare-pair-without-dat", bare(app, drop=".dat"), 66, "app.bin needs app.dat beside it"),
    Case("bare-pair-without-bin", bare(app, drop=".bin"), 66, "app.dat needs app.bin beside it"),
    Case("bare-pair-without-type", bare(make_image(APP, fw_type=None)), 65, "no valid firmware type"),
]
CORPUS += [
    Case(
        "empty-zip-archive",
        raw_file("p.zip", zip_bytes([])),
        65,
        "has no manifest.json",
        fix="give an nrfutil",
    ),
    Case(
        "crc-corrupt-member",
        zipped_with(Entry("app.bin", app.firmware, crc=0xDEADBEEF)),
        65,
        "'app.bin' is corrupt or does not match its header .*CRC",
    ),
    Case("hash-type-sha512", app_with(hash_type=HashType.SHA512), 65, "hash type SHA512; .*only SHA256"),
    Case(
        "truncated-dat",
        zipped_with(Entry("app.dat", app.dat[:-20])),
        65,
        "app.dat: init packet does not decode",
    ),
    Case(
        "corrupted-signature",
        zipped(replace(app, dat=flip(app.dat, len(app.dat) - 10))),
        65,
        "signature does not verify with the given public key",
        WITH_KEY,
        fix="sign the package with the private key",
    ),
    Case(
        "signed-with-key-a-not-ours",
        lambda d: shared_fixture("app_v2_signed.zip"),
        65,
        "app_a.dat: the signature does not verify",
        WITH_KEY,
        fix="sign the package with the private key",
    ),
    Case(
        "nrfutil-unsigned-with-key",
        lambda d: shared_fixture("app_v2_unsigned.zip"),
        65,
        "app_a.dat is unsigned but a public key was given",
        WITH_KEY,
        fix="--key-file KEY.pem",
    ),
    Case("app-sd-req-empty", app_with(sd_req=()), 65, "empty sd_req", fix="--sd-req"),
    Case(
        "missing-key-file",
        zipped(app),
        66,
        "public key file /nonexistent/key.pem does not exist",
        ("--public-key", "/nonexistent/key.pem"),
        fix="nrfutil keys display",
    ),
    Case(
        "private-key-as-public-key",
        zipped(app),
        64,
        "key_a.pem is a private key",
        ("--public-key", str(shared_fixture("key_a.pem"))),
        fix="nrfutil keys display --key pk",
    ),
    Case(
        "garbage-key-file",
        zipped(app),
        64,
        "is neither a PEM key nor C source",
        ("--public-key", "{package}"),
        fix="nrfutil keys display --key pk",
    ),
]
FIXES = {
    "missing-file": "check the path",
    "directory": "give an nrfutil DFU package",
    "empty-file": "give an nrfutil DFU package",
    "not-a-zip": "give an nrfutil DFU package",
    "hex-file": "give an nrfutil DFU package",
    "truncated-zip": "give an nrfutil DFU package",
    "no-manifest": "give an nrfutil DFU package",
    "zip-bomb": "refusing it unread",
    "unreferenced-zip-bomb": "refusing it unread",
    "compression-ratio": "refusing it unread",
    "image-too-large": "refusing it unread",
    "path-traversal": "refusing a package with unsafe file names",
    "absolute-path": "refusing a package with unsafe file names",
    "bl-plus-app": "split it into packages",
    "sd-plus-bl": "split it into packages",
    "sdbl-plus-sd": "split it into packages",
    "hw-version-mismatch": "--hw-version 52",
    "sd-req-fffe": "--sd-req <FWID of the target's SoftDevice>",
    "init-command-too-long-to-verify": "rebuild without --app-boot-validation",
    "app-ignores-new-softdevice": "--sd-id 0xB7",
    "wrong-key": "sign the package with the private key",
    "bootloader-too-large": "shrink the bootloader",
    "bare-pair-without-dat": "give an nrfutil DFU package",
    "bare-pair-without-bin": "give an nrfutil DFU package",
    "sd-without-info-struct": "genuine SoftDevice hex",
    "sd-too-short": "genuine SoftDevice hex",
    "sd-info-too-small": "genuine SoftDevice hex",
    "sd-end-address-short": "genuine SoftDevice hex",
    "sdbl-without-info-struct": "genuine SoftDevice hex",
}
CORPUS = [replace(case, fix=FIXES.get(case.id, case.fix)) for case in CORPUS]


@pytest.fixture(scope="module")
def device() -> Iterator[SimulatorThread]:
    with SimulatorThread(TEST_KEY.public_key()) as nrf:
        yield nrf


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("key") / "public.pem"
    pem = TEST_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path.write_bytes(pem)
    return path


def error_line(stderr: str) -> str:
    """The single line a refusal prints; fails on anything else (a second line, a traceback)."""
    assert "Traceback" not in stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id) for case in CORPUS])
def test_hostile_package_is_refused_before_a_byte_is_sent(
    tmp_path: Path, device: SimulatorThread, key_file: Path, case: Case
) -> None:
    package = case.build(tmp_path)
    args = [arg.replace(KEY, str(key_file)).replace("{package}", str(package)) for arg in case.args]
    before = device.stats.bytes_in
    result = run_cli("flash", str(package), "--port", device.port, "--baud", str(FAST_BAUD), *args)
    line = error_line(result.stderr)
    assert result.exit_code == case.code, line
    assert line.startswith("mcu-updater: error: ")
    cause = re.search(case.phrase, line)
    assert cause, line
    assert case.fix in line[cause.end() :], line
    assert device.stats.bytes_in == before, "bytes reached the device before the package was refused"


def test_the_same_harness_sees_a_valid_package_arrive(
    tmp_path: Path, device: SimulatorThread, key_file: Path
) -> None:
    """The control case: what the corpus asserts (no bytes in) does fail when bytes are sent."""
    package = write_package(tmp_path / "good.zip", app)
    before = device.stats.bytes_in
    result = run_cli(
        "flash",
        str(package),
        "--port",
        device.port,
        "--baud",
        str(FAST_BAUD),
        "--public-key",
        str(key_file),
        "--force",
    )
    assert (result.exit_code, result.stderr) == (0, "")
    assert device.stats.bytes_in - before > len(app.firmware)


def test_corpus_is_large_and_distinct() -> None:
    assert len({case.id for case in CORPUS}) == len(CORPUS) >= 36


# --- configurations: `check-config` and `run` refuse them, and `run` never opens the port ---------


@dataclass(frozen=True)
class ConfigCase:
    """A bad configuration: what replaces what in the valid one, and what the one line must say."""

    id: str
    edit: Callable[[str], str | bytes]
    phrase: str
    expected: str


def swap(old: str, new: str) -> Callable[[str], str]:
    def edit(text: str) -> str:
        assert old in text
        return text.replace(old, new)

    return edit


def add(extra: str) -> Callable[[str], str]:
    return lambda text: text + extra


CONFIG_CORPUS = [
    ConfigCase("not-yaml", add("gpio: {backend: none\n"), r":\d+: YAML syntax error", "valid YAML"),
    ConfigCase(
        "not-utf8", lambda text: text.encode() + b"state_dir: \xff\n", ":11: the file is not UTF-8", "UTF-8"
    ),
    ConfigCase("empty-file", lambda text: "", ":1: the file is empty", "at least serial.port and firmware"),
    ConfigCase("a-list", lambda text: "- serial\n- firmware\n", ":1: got a list", "a mapping with the keys"),
    ConfigCase(
        "baud-as-text", swap("baud: 1000000", "baud: fast"), ":3: serial.baud: got 'fast'", "an integer"
    ),
    ConfigCase(
        "flow-control-as-text",
        swap("  baud:", "  flow_control: sometimes\n  baud:"),
        r"serial.flow_control: got 'sometimes'",
        "true or false",
    ),
    ConfigCase(
        "unknown-key", swap("  baud:", "  baudrate:"), "serial.baudrate: unknown key", "one of port, baud"
    ),
    ConfigCase(
        "unknown-section", add("serail: {}\n"), "serail: unknown key .did you mean 'serial'", "one of"
    ),
    ConfigCase("missing-firmware", swap("firmware:", "# firmware:"), ":1: firmware: is missing", "a path to"),
    ConfigCase(
        "missing-port", swap("  port:", "  # port:"), "serial.port: is missing", "an absolute device path"
    ),
    ConfigCase("relative-port", swap("port: /", "port: "), "serial.port: got", "an absolute device path"),
    ConfigCase(
        "missing-public-key-file",
        swap("public.pem", "absent.pem"),
        r"target.public_key: \S*absent.pem does not exist",
        "a P-256 public key file",
    ),
    ConfigCase(
        "private-key-as-public-key",
        swap("public.pem", str(shared_fixture("key_a.pem"))),
        "target.public_key: .*is a private key",
        "a P-256 public key file",
    ),
    ConfigCase(
        "missing-firmware-file",
        swap("good.zip", "absent.zip"),
        r"firmware: \S*absent.zip does not exist",
        "nrfutil",
    ),
    ConfigCase(
        "line-name-with-space",
        add("  reset: {line: GPIO 5}\n"),
        "gpio.reset.line: got 'GPIO 5'",
        "a line name like GPIO5",
    ),
    ConfigCase(
        "line-as-quoted-number", add("  reset: {line: '5'}\n"), "gpio.reset.line: got the text '5'", "(5)"
    ),
    ConfigCase(
        "dfu-line-is-the-reset-line",
        lambda text: text.replace("backend: none", "backend: gpiod") + "  dfu: {line: GPIO5}\n",
        "gpio.dfu: is the same line as gpio.reset",
        "two different lines",
    ),
    ConfigCase(
        "unknown-line-role", add("  boot: {line: GPIO7}\n"), "gpio.boot: unknown key", "one of backend"
    ),
    ConfigCase(
        "duration-in-minutes", add("timeouts: {ready: 2min}\n"), "timeouts.ready: got '2min'", "20ms, 1.5s"
    ),
    ConfigCase(
        "negative-duration", add("timeouts: {reply: -1s}\n"), "timeouts.reply: got '-1s'", "a duration"
    ),
    ConfigCase(
        "bad-downgrade-policy",
        add("policy: {downgrade: maybe}\n"),
        "policy.downgrade: got 'maybe'",
        "allow, deny",
    ),
    ConfigCase(
        "duplicate-key", add("serial: {port: /dev/ttyS1}\n"), "serial: duplicate key", "each key once"
    ),
]


@pytest.fixture
def good_config(tmp_path: Path, device: SimulatorThread, key_file: Path) -> str:
    """A configuration `run` would accept, aimed at the simulator (gpio section last, for add())."""
    write_package(tmp_path / "good.zip", app)
    (tmp_path / "public.pem").write_bytes(key_file.read_bytes())
    return textwrap.dedent(
        f"""\
        serial:
          port: {device.port}
          baud: {FAST_BAUD}
        target:
          public_key: public.pem
        firmware: good.zip
        state_dir: {tmp_path / "state"}
        runtime_dir: {tmp_path / "run"}
        gpio:
          backend: none
        """
    )


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id) for case in CONFIG_CORPUS])
def test_hostile_config_is_refused_before_the_port_is_opened(
    tmp_path: Path, device: SimulatorThread, good_config: str, case: ConfigCase
) -> None:
    path = tmp_path / "mcu-updater.yaml"
    content = case.edit(good_config)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = device.stats.bytes_in
    for command in (["check-config", str(path)], ["run", "--config", str(path)]):
        result = run_cli(*command)
        line = error_line(result.stderr)
        assert result.exit_code == 78, line
        cause = re.search(case.phrase, line)
        assert cause, line
        assert f"expected {case.expected}" in line[cause.end() :] or case.expected in line[cause.end() :], (
            line
        )
    assert device.stats.bytes_in == before


def test_the_config_corpus_edits_a_config_that_works(tmp_path: Path, good_config: str) -> None:
    path = tmp_path / "mcu-updater.yaml"
    path.write_text(good_config)
    result = run_cli("check-config", str(path))
    assert (result.exit_code, result.stderr) == (0, ""), result.stderr


@pytest.mark.parametrize(
    ("command", "phrase"),
    [
        (["check-config", "/nonexistent/mcu-updater.yaml"], "cannot read the configuration"),
        (["run", "--config", "/nonexistent/mcu-updater.yaml"], "cannot read the configuration"),
    ],
    ids=["check-config", "run"],
)
def test_missing_config_file(command: list[str], phrase: str) -> None:
    result = run_cli(*command)
    line = error_line(result.stderr)
    assert result.exit_code == 78
    assert phrase in line
    assert "expected a readable UTF-8 YAML file" in line


# --- the device side: a scripted bootloader on a pty that answers badly -------------------------

PING, SET_PRN, MTU_GET, FW_VERSION = 0x09, 0x02, 0x07, 0x0B
CREATE, CRC_GET, EXECUTE, SELECT = 0x01, 0x03, 0x04, 0x06
Answer = Callable[[bytes], bytes]


class ScriptedBootloader:
    """A stand-in for the nRF52 on a real pty: each SLIP request it decodes is answered with
    ``answer(request)`` (raw bytes for the line, b"" for silence). With ``flood`` it instead streams
    bytes without a SLIP END from the first request on, as fast as the host reads them."""

    def __init__(self, answer: Answer | None = None, *, flood: bytes = b"") -> None:
        self.answer = answer
        self.flood = flood
        self.requests: list[bytes] = []
        self.flooded = 0
        self._master, self._slave = os.openpty()
        for fd in (self._master, self._slave):
            tty.setraw(fd)
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve)

    def _serve(self) -> None:
        decoder = SlipDecoder(max_frame=1024)
        while not self._stop.is_set():
            writing = [self._master] if self.flood and self.requests else []
            readable, writable, _ = select.select([self._master], writing, [], 0.05)
            if readable:
                received = b""
                with contextlib.suppress(BlockingIOError):
                    received = os.read(self._master, 4096)
                for request in decoder.feed(received):
                    self.requests.append(request)
                    reply = self.answer(request) if self.answer is not None else b""
                    if reply:
                        os.write(self._master, reply)
            if writable:
                # Non-blocking: once the host has closed the port nobody drains the pty any more.
                with contextlib.suppress(BlockingIOError):
                    self.flooded += os.write(self._master, self.flood)

    def __enter__(self) -> ScriptedBootloader:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)
        os.close(self._slave)
        os.close(self._master)


def reply(*fields: int | bytes) -> bytes:
    """A SLIP-framed reply frame from bytes and byte values."""
    return encode(b"".join(bytes([f]) if isinstance(f, int) else f for f in fields))


def well_behaved(request: bytes) -> bytes:
    """The answers of an empty bootloader, as far as the updater gets before it sends an image."""
    match request[0]:
        case 0x09:
            return reply(0x60, PING, 0x01, request[1:2])
        case 0x02:
            return reply(0x60, SET_PRN, 0x01)
        case 0x07:
            return reply(0x60, MTU_GET, 0x01, (131).to_bytes(2, "little"))
        case 0x0B:
            return reply(0x60, FW_VERSION, 0x01, 0xFF, bytes(12))
    return b""


def except_for(opcode: int, answer: bytes) -> Answer:
    """A well-behaved bootloader that answers ``opcode`` with ``answer``."""
    return lambda request: answer if request[0] == opcode else well_behaved(request)


class UpToTheData:
    """A bootloader that takes the init packet properly and answers SELECT data with ``data_select``."""

    def __init__(self, data_select: bytes) -> None:
        self.data_select = data_select
        self.object = b""

    def __call__(self, request: bytes) -> bytes:
        match request[:2]:
            case b"\x06\x01":
                return reply(0x60, SELECT, 0x01, struct.pack("<III", 256, 0, 0))
            case b"\x06\x02":
                return self.data_select
        match request[0]:
            case 0x01:
                self.object = b""
                return reply(0x60, CREATE, 0x01)
            case 0x08:
                self.object += request[1:]
                return b""
            case 0x03:
                return reply(
                    0x60, CRC_GET, 0x01, struct.pack("<II", len(self.object), zlib.crc32(self.object))
                )
            case 0x04:
                return reply(0x60, EXECUTE, 0x01)
        return well_behaved(request)


@dataclass(frozen=True)
class DeviceCase:
    id: str
    device: Callable[[], ScriptedBootloader]
    code: int
    phrase: str
    fix: str


DEVICE_CORPUS = [
    DeviceCase(
        "garbage-replies",
        lambda: ScriptedBootloader(lambda request: b"\x12\x34\xc0\xff\xdb\x01\xc0hello\xc0"),
        69,
        "the bootloader did not answer a ping within",
        "check that the target is in its bootloader",
    ),
    DeviceCase(
        "echoes-requests",
        lambda: ScriptedBootloader(encode),
        69,
        "the bootloader did not answer a ping within",
        "check that the target is in its bootloader",
    ),
    DeviceCase(
        "ping-answered-with-another-id",
        lambda: ScriptedBootloader(lambda request: reply(0x60, PING, 0x01, request[1] ^ 0xFF)),
        69,
        "the bootloader did not answer a ping within",
        "the port, baud rate and flow control",
    ),
    DeviceCase(
        "reply-to-the-wrong-opcode",
        lambda: ScriptedBootloader(except_for(SET_PRN, reply(0x60, MTU_GET, 0x01, 131, 0))),
        75,
        r"no reply to SET_PRN within [\d.]+ s \(1 malformed or unrelated replies meanwhile\)",
        "check the cable, baud rate and flow control",
    ),
    DeviceCase(
        "truncated-inventory-reply",
        lambda: ScriptedBootloader(except_for(FW_VERSION, reply(0x60, FW_VERSION, 0x01, 0x01, 2))),
        75,
        r"truncated FIRMWARE_VERSION reply from the device \(2 of 13 bytes\)",
        "check the serial line",
    ),
    DeviceCase(
        "reply-without-result",
        lambda: ScriptedBootloader(except_for(MTU_GET, reply(0x60, MTU_GET))),
        75,
        r"no reply to MTU_GET within [\d.]+ s \(1 malformed or unrelated replies meanwhile\)",
        "check the cable",
    ),
    DeviceCase(
        "unknown-result-code",
        lambda: ScriptedBootloader(except_for(SET_PRN, reply(0x60, SET_PRN, 0x55))),
        75,
        "the device answered SET_PRN with 0x55 UNKNOWN, which no SDK 15.2 bootloader sends",
        "check the baud rate and the serial line",
    ),
    DeviceCase(
        "unknown-extended-error",
        lambda: ScriptedBootloader(except_for(MTU_GET, reply(0x60, MTU_GET, 0x0B, 0x42))),
        75,
        "the device answered MTU_GET with EXT 0x42 UNKNOWN, which no SDK 15.2 bootloader sends",
        "run again",
    ),
    DeviceCase(
        "impossible-mtu",
        lambda: ScriptedBootloader(except_for(MTU_GET, reply(0x60, MTU_GET, 0x01, 0xFF, 0xFF))),
        75,
        "the device reports an MTU of 65535 bytes",
        "check the baud rate",
    ),
    DeviceCase(
        "data-object-size-zero",
        lambda: ScriptedBootloader(UpToTheData(reply(0x60, SELECT, 0x01, struct.pack("<III", 0, 100, 0)))),
        75,
        "the device reports a data object size of 0 bytes",
        "check the serial line",
    ),
    DeviceCase(
        "data-object-size-odd",
        lambda: ScriptedBootloader(UpToTheData(reply(0x60, SELECT, 0x01, struct.pack("<III", 4095, 0, 0)))),
        75,
        "the device reports a data object size of 4095 bytes",
        "check the serial line",
    ),
    DeviceCase(
        "endless-bytes-without-end",
        lambda: ScriptedBootloader(flood=b"\x55" * 4096),
        69,
        "the bootloader did not answer a ping within",
        "check that the target is in its bootloader",
    ),
]


@pytest.mark.parametrize("case", [pytest.param(case, id=case.id) for case in DEVICE_CORPUS])
def test_hostile_device_gets_one_clean_line(tmp_path: Path, key_file: Path, case: DeviceCase) -> None:
    package = write_package(tmp_path / "app.zip", app)
    with case.device() as device:
        result = run_cli("flash", str(package), "--port", device.port, "--ready-timeout", "1")
    line = error_line(result.stderr)
    assert result.exit_code == case.code, line
    cause = re.search(case.phrase, line)
    assert cause, line
    assert case.fix in line[cause.end() :], line
    assert device.requests, "the host never asked"
    assert b"\x01\x02" not in {request[:2] for request in device.requests}, "no data object was created"
    if device.flood:
        assert device.flooded > 64 * 1024


@pytest.mark.parametrize(
    ("port", "phrase"),
    [
        ("/dev/null", "cannot open serial port /dev/null: Could not configure port"),
        ("/tmp", "cannot open serial port /tmp: .*Is a directory"),
    ],
    ids=["not-a-tty", "a-directory"],  # a missing port: tests/test_cli.py
)
def test_a_port_that_is_no_serial_port(tmp_path: Path, port: str, phrase: str) -> None:
    package = write_package(tmp_path / "app.zip", app)
    result = run_cli("flash", str(package), "--port", port, "--ready-timeout", "1")
    line = error_line(result.stderr)
    assert result.exit_code == 74, line
    cause = re.search(phrase, line)
    assert cause, line
    assert "check the port name" in line[cause.end() :]


def test_run_with_a_gpio_chip_that_is_not_there(
    tmp_path: Path, device: SimulatorThread, good_config: str
) -> None:
    """Valid as a file (check-config passes), wrong on this gateway: `run` says which chip, sends nothing."""
    path = tmp_path / "mcu-updater.yaml"
    path.write_text(good_config.replace("backend: none", "backend: gpiod\n  chip: /dev/gpiochip-nope"))
    assert run_cli("check-config", str(path)).exit_code == 0
    before = device.stats.bytes_in
    result = run_cli("run", "--config", str(path))
    line = error_line(result.stderr)
    assert result.exit_code == 78, line
    assert re.search(
        r"GPIO chip /dev/gpiochip-nope does not exist; .*(gpiodetect|no GPIO chips|set chip to)", line
    ), line
    assert device.stats.bytes_in == before
