"""Init packets (protocol spec §7): the nrfutil fixtures, the §7.3 layout, signing, decoder limits."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

from mcu_updater.dfu.initpacket import (
    FwType,
    HashType,
    InitCommand,
    InitPacket,
    decode_init_packet,
    encode_init_command,
    encode_init_packet,
    image_hash_field,
)
from mcu_updater.dfu.signing import ecdsa_signer, verify_signature
from mcu_updater.errors import PackageError
from tests.conftest import shared_fixture

FAST = settings(max_examples=200, deadline=None, database=None)

BOOT_VALIDATION = bytes.fromhex("52 04 08 01 12 00")
"""nrfutil's boot_validation field (field 10, unknown to SDK 15.2) as it appears in every fixture."""


def h(text: str) -> bytes:
    return bytes.fromhex(text)


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def ld(number: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""
    return varint(number << 3 | 2) + varint(len(payload)) + payload


@functools.cache
def image_files(package: str, image: str) -> tuple[bytes, bytes]:
    """(.dat, .bin) of one image of a fixture package, located through its manifest.json."""
    with zipfile.ZipFile(shared_fixture(package)) as archive:
        entry = json.loads(archive.read("manifest.json"))["manifest"][image]
        return archive.read(entry["dat_file"]), archive.read(entry["bin_file"])


def decoded(package: str, image: str) -> InitPacket:
    return decode_init_packet(image_files(package, image)[0])


def signature_of(packet: InitPacket) -> bytes:
    assert packet.signature is not None
    return packet.signature


@pytest.fixture(scope="module")
def private_key() -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(shared_fixture("key_a.pem").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


@pytest.fixture(scope="module")
def public_key() -> ec.EllipticCurvePublicKey:
    key = serialization.load_pem_public_key(shared_fixture("key_a_public.pem").read_bytes())
    assert isinstance(key, ec.EllipticCurvePublicKey)
    return key


# --- the nrfutil fixtures (shared/fixtures/README.md) -----------------------------------------


@dataclass(frozen=True)
class Expected:
    package: str
    image: str
    fw_type: FwType
    fw_version: int
    hw_version: int
    sd_req: frozenset[int]
    signed: bool = True


APP, AF = FwType.APPLICATION, frozenset({0xAF})
FIXTURE_IMAGES = [
    Expected("app_v2_signed.zip", "application", APP, 2, 52, AF),
    Expected("app_v1_signed_downgrade.zip", "application", APP, 1, 52, AF),
    Expected("app_v3_hw51_signed.zip", "application", APP, 3, 51, AF),
    Expected("app_v2_unsigned.zip", "application", APP, 2, 52, AF, signed=False),
    Expected("app_v3_sdreq_A8_signed.zip", "application", APP, 3, 52, frozenset({0xA8})),
    Expected("bl_v2_signed.zip", "bootloader", FwType.BOOTLOADER, 2, 52, AF),
    # SD+APP: the app requires the new SoftDevice (--sd-id); nrfutil's SD fw_version is 0xFFFFFFFF (§7.2).
    Expected("sd_app_signed.zip", "application", APP, 3, 52, frozenset({0xB7})),
    Expected("sd_app_signed.zip", "softdevice", FwType.SOFTDEVICE, 0xFFFFFFFF, 52, frozenset({0xAF, 0xB7})),
]
FIXTURE_IDS = [f"{e.package}:{e.image}" for e in FIXTURE_IMAGES]
SIZE_FIELD = {FwType.APPLICATION: "app_size", FwType.BOOTLOADER: "bl_size", FwType.SOFTDEVICE: "sd_size"}


@pytest.mark.parametrize("expected", FIXTURE_IMAGES, ids=FIXTURE_IDS)
def test_fixture_fields(expected: Expected, public_key: ec.EllipticCurvePublicKey) -> None:
    dat, image = image_files(expected.package, expected.image)
    packet = decode_init_packet(dat)
    cmd = packet.command
    assert packet.raw == dat
    assert (cmd.fw_type, cmd.fw_version, cmd.hw_version) == (
        expected.fw_type,
        expected.fw_version,
        expected.hw_version,
    )
    assert set(cmd.sd_req) == expected.sd_req
    assert len(cmd.sd_req) == len(expected.sd_req)
    sizes = {name: getattr(cmd, name) for name in ("sd_size", "bl_size", "app_size")}
    assert sizes == dict.fromkeys(sizes, 0) | {SIZE_FIELD[expected.fw_type]: len(image)}
    assert cmd.image_size == len(image)
    assert cmd.hash_type == HashType.SHA256
    assert cmd.hash == hashlib.sha256(image).digest()[::-1] == image_hash_field(image)
    assert cmd.sha256 == hashlib.sha256(image).digest()
    assert cmd.is_debug is False
    assert cmd.extra == BOOT_VALIDATION
    assert packet.signed_bytes == packet.device_signed_bytes
    assert packet.is_signed == expected.signed
    if expected.signed:
        assert packet.signature_type == 0
        assert verify_signature(signature_of(packet), packet.signed_bytes, public_key)
    else:
        assert (packet.signature, packet.signature_type) == (None, None)


def test_fixture_sizes_from_readme() -> None:
    assert len(image_files("app_v2_signed.zip", "application")[1]) == 61440
    assert len(image_files("bl_v2_signed.zip", "bootloader")[1]) == 16 * 1024
    assert len(image_files("sd_app_signed.zip", "softdevice")[1]) == 36 * 1024


def test_annotated_example_layout() -> None:
    """Byte for byte the signed 141-byte application packet annotated in §7.3."""
    dat, image = image_files("app_v2_signed.zip", "application")
    packet = decode_init_packet(dat)
    init = (
        h("08 02  10 34  1A 02 AF 01  20 00 28 00 30 00  38 80 E0 03  42 24 08 03 12 20")
        + image_hash_field(image)
        + h("48 00")
        + BOOT_VALIDATION
    )
    assert len(init) == 64
    assert packet.signed_bytes == init
    assert signature_of(packet) == dat[-64:]
    assert dat == h("12 8A 01  0A 44  08 01  12 40") + init + h("10 00  1A 40") + dat[-64:]
    assert len(dat) == 141


@pytest.mark.parametrize("expected", FIXTURE_IMAGES, ids=FIXTURE_IDS)
def test_fixture_re_encodes_byte_identically(expected: Expected) -> None:
    dat, _ = image_files(expected.package, expected.image)
    packet = decode_init_packet(dat)
    signed: list[bytes] = []

    def signer(data: bytes) -> bytes:
        signed.append(data)
        return signature_of(packet)

    assert encode_init_packet(packet.command, signer if expected.signed else None) == dat
    assert signed == ([packet.signed_bytes] if expected.signed else [])
    assert encode_init_command(packet.command) == packet.signed_bytes


# --- signing ----------------------------------------------------------------------------------


def unsigned_command() -> InitCommand:
    return decoded("app_v2_unsigned.zip", "application").command


def test_ecdsa_signer_round_trip(
    private_key: ec.EllipticCurvePrivateKey, public_key: ec.EllipticCurvePublicKey
) -> None:
    cmd = replace(unsigned_command(), fw_version=7)
    packet = decode_init_packet(encode_init_packet(cmd, ecdsa_signer(private_key)))
    assert packet.command == cmd
    assert packet.signature_type == 0
    assert len(signature_of(packet)) == 64
    assert verify_signature(signature_of(packet), packet.signed_bytes, public_key)
    assert verify_signature(signature_of(packet), packet.device_signed_bytes, public_key)
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    assert not verify_signature(signature_of(packet), packet.signed_bytes, other)


@pytest.mark.parametrize("part", ["signature", "init"])
@pytest.mark.parametrize("index", [0, 31, 32, -1])
def test_tampering_breaks_the_signature(
    private_key: ec.EllipticCurvePrivateKey, public_key: ec.EllipticCurvePublicKey, part: str, index: int
) -> None:
    packet = decode_init_packet(encode_init_packet(unsigned_command(), ecdsa_signer(private_key)))
    signature, init = bytearray(signature_of(packet)), bytearray(packet.signed_bytes)
    (signature if part == "signature" else init)[index] ^= 0x01
    assert not verify_signature(bytes(signature), bytes(init), public_key)


@pytest.mark.parametrize("length", [0, 63, 65, 128])
def test_signature_of_wrong_length_does_not_verify(
    length: int, public_key: ec.EllipticCurvePublicKey
) -> None:
    packet = decoded("app_v2_signed.zip", "application")
    signature = (signature_of(packet) * 2)[:length]
    assert not verify_signature(signature, packet.signed_bytes, public_key)


def command_of_length(length: int) -> InitCommand:
    """The fixture's command padded through an unknown field 10 to an exact serialized length."""
    base = replace(unsigned_command(), extra=b"")
    pad = length - len(encode_init_command(base)) - 2
    assert 0 <= pad < 128
    return replace(base, extra=ld(10, bytes(pad)))


@pytest.mark.parametrize("length", [64, 127, 128, 129, 140])
def test_device_signed_bytes_of_long_init_commands(length: int) -> None:
    """15.2 skips one length byte only: from 128 bytes on (two-byte length) it hashes one byte early."""
    packet = decode_init_packet(encode_init_packet(command_of_length(length), lambda _: bytes(64)))
    assert len(packet.signed_bytes) == length
    if length < 128:
        assert packet.device_signed_bytes == packet.signed_bytes
    else:
        assert packet.device_signed_bytes != packet.signed_bytes
        assert packet.device_signed_bytes == varint(length)[1:] + packet.signed_bytes


# --- decoder limits ---------------------------------------------------------------------------


def unsigned_packet_of_size(size: int) -> bytes:
    base = replace(unsigned_command(), extra=b"")
    for pad in range(size):
        raw = encode_init_packet(replace(base, extra=ld(10, bytes(pad))))
        if len(raw) == size:
            return raw
    raise AssertionError(f"cannot build a {size}-byte packet")


def signed_parts() -> tuple[bytes, bytes]:
    """(Command bytes, signature) of the signed application fixture."""
    packet = decoded("app_v2_signed.zip", "application")
    return b"\x08\x01" + ld(2, packet.signed_bytes), signature_of(packet)


def unsigned_with_init(init: bytes) -> bytes:
    return ld(1, b"\x08\x01" + ld(2, init))


def with_signature(signature: bytes) -> Callable[[bytes], bytes]:
    return lambda _: signature


def truncated_fixture(cut: int) -> bytes:
    dat, _ = image_files("app_v2_signed.zip", "application")
    return dat[:cut]


INVALID: list[tuple[str, Callable[[], bytes]]] = [
    ("257 bytes", lambda: unsigned_packet_of_size(257)),
    ("empty packet", lambda: b""),
    ("garbage ff", lambda: b"\xff" * 16),
    ("garbage text", lambda: b"hello, init packet"),
    ("huge length", lambda: h("0A FF FF FF FF 0F 00")),
    ("truncated by one", lambda: truncated_fixture(-1)),
    ("truncated in signature", lambda: truncated_fixture(100)),
    ("truncated in init", lambda: truncated_fixture(40)),
    ("truncated in header", lambda: truncated_fixture(2)),
    ("empty command", lambda: h("0A 00")),
    ("empty signed command", lambda: h("12 00")),
    ("command without init", lambda: ld(1, b"\x08\x01")),
    ("signed: no signature", lambda: ld(2, ld(1, signed_parts()[0]) + b"\x10\x00")),
    ("signed: no signature_type", lambda: ld(2, ld(1, signed_parts()[0]) + ld(3, signed_parts()[1]))),
    ("signed: no command", lambda: ld(2, b"\x10\x00" + ld(3, signed_parts()[1]))),
    ("hash: no digest", lambda: unsigned_with_init(h("08 02 10 34") + ld(8, b"\x08\x03"))),
    ("hash: no hash_type", lambda: unsigned_with_init(h("08 02 10 34") + ld(8, ld(2, bytes(32))))),
    ("hash 33 bytes", lambda: encode_init_packet(replace(unsigned_command(), hash=bytes(33)))),
    ("17 sd_req", lambda: encode_init_packet(replace(unsigned_command(), sd_req=tuple(range(1, 18))))),
    ("signature 65 bytes", lambda: encode_init_packet(unsigned_command(), with_signature(bytes(65)))),
]


@pytest.mark.parametrize("build", [b for _, b in INVALID], ids=[name for name, _ in INVALID])
def test_decode_rejects(build: Callable[[], bytes]) -> None:
    with pytest.raises(PackageError):
        decode_init_packet(build())


AT_LIMIT: list[tuple[str, Callable[[], bytes]]] = [
    ("256 bytes", lambda: unsigned_packet_of_size(256)),
    ("hash 32 bytes", lambda: encode_init_packet(replace(unsigned_command(), hash=bytes(32)))),
    ("16 sd_req", lambda: encode_init_packet(replace(unsigned_command(), sd_req=tuple(range(1, 17))))),
    ("signature 64 bytes", lambda: encode_init_packet(unsigned_command(), with_signature(bytes(64)))),
    ("short signature", lambda: encode_init_packet(unsigned_command(), with_signature(bytes(10)))),
]


@pytest.mark.parametrize("build", [b for _, b in AT_LIMIT], ids=[name for name, _ in AT_LIMIT])
def test_decode_accepts_at_the_limits(build: Callable[[], bytes]) -> None:
    raw = build()
    assert decode_init_packet(raw).raw == raw


@pytest.mark.parametrize(
    ("fw_type", "size"),
    [
        (FwType.APPLICATION, 3),
        (FwType.SOFTDEVICE, 1),
        (FwType.BOOTLOADER, 2),
        (FwType.SOFTDEVICE_BOOTLOADER, 3),
        (None, 0),
    ],
)
def test_image_size_follows_the_type(fw_type: FwType | None, size: int) -> None:
    assert InitCommand(fw_type, sd_size=1, bl_size=2, app_size=3).image_size == size


def test_image_hash_field_is_reversed_sha256() -> None:
    assert image_hash_field(b"abc") == h("ad1500f261ff10b49c7a1796a36103b02322ae5dde404141eacf018fbf1678ba")


# --- properties -------------------------------------------------------------------------------

u32 = st.integers(0, 0xFFFFFFFF)
commands = st.builds(
    InitCommand,
    fw_type=st.none() | st.sampled_from(FwType),
    fw_version=st.none() | u32,
    hw_version=st.none() | u32,
    sd_req=st.lists(st.integers(0, 0xFFFF), max_size=16).map(tuple),
    sd_size=st.none() | u32,
    bl_size=st.none() | u32,
    app_size=st.none() | u32,
    hash_type=st.just(int(HashType.SHA256)),
    hash=st.binary(max_size=32),
    is_debug=st.booleans(),
    extra=st.sampled_from([b"", BOOT_VALIDATION]),
)


@FAST
@given(commands, st.booleans())
def test_encode_decode_round_trip(cmd: InitCommand, signed: bool) -> None:
    raw = encode_init_packet(cmd, with_signature(bytes(range(64))) if signed else None)
    packet = decode_init_packet(raw)
    assert packet.command == cmd
    assert packet.is_signed == signed
    assert packet.signed_bytes == encode_init_command(cmd)


def _decode_or_package_error(raw: bytes) -> None:
    with contextlib.suppress(PackageError):
        decode_init_packet(raw)


@FAST
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(raw: bytes) -> None:
    _decode_or_package_error(raw)


edits = st.lists(
    st.tuples(st.sampled_from(["flip", "set", "delete", "insert"]), st.integers(0, 200), st.integers(0, 255)),
    min_size=1,
    max_size=6,
)


@pytest.mark.parametrize(
    ("package", "image"),
    [("app_v2_signed.zip", "application"), ("app_v2_unsigned.zip", "application")],
)
@FAST
@given(edits=edits)
def test_fuzz_mutated_fixture(package: str, image: str, edits: list[tuple[str, int, int]]) -> None:
    data = bytearray(image_files(package, image)[0])
    for op, position, value in edits:
        at = position % (len(data) + 1)
        if op == "insert":
            data.insert(at, value)
        elif at < len(data):
            if op == "delete":
                del data[at]
            else:
                data[at] = data[at] ^ (1 << value % 8) if op == "flip" else value
    _decode_or_package_error(bytes(data))
