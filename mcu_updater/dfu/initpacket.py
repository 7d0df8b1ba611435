"""Init packets (`dfu-cc.proto` as compiled into SDK 15.2): decode, encode, sign, verify. Pure.

The schema is built at import time from a descriptor, so no generated code or protoc is needed.
Unknown fields (nrfutil's ``boot_validation``, field 10) are kept and ignored, as nanopb does.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from mcu_updater.errors import PackageError

INIT_PACKET_MAX: Final = 256
HASH_MAX: Final = 32
SIGNATURE_SIZE: Final = 64
SD_REQ_MAX: Final = 16


class FwType(enum.IntEnum):
    APPLICATION = 0
    SOFTDEVICE = 1
    BOOTLOADER = 2
    SOFTDEVICE_BOOTLOADER = 3


class HashType(enum.IntEnum):
    NO_HASH = 0
    CRC = 1
    SHA128 = 2
    SHA256 = 3
    SHA512 = 4


class CommandOpCode(enum.IntEnum):
    INIT = 1


class SignatureType(enum.IntEnum):
    ECDSA_P256_SHA256 = 0
    ED25519 = 1


def _build_schema() -> dict[str, type[Message]]:
    fdp = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="mcu_updater/dfu_cc.proto", package="mcu_updater.dfu", syntax="proto2"
    )

    def enum_type(name: str, values: type[enum.IntEnum]) -> None:
        e = file.enum_type.add(name=name)
        for member in values:
            e.value.add(name=f"{name.upper()}_{member.name}", number=int(member))

    enum_type("FwType", FwType)
    enum_type("HashType", HashType)
    enum_type("SignatureType", SignatureType)
    enum_type("OpCode", CommandOpCode)

    def message(name: str, *fields: tuple[str, int, int, int, str]) -> None:
        m = file.message_type.add(name=name)
        for fname, number, label, ftype, type_name in fields:
            f = m.field.add(name=fname, number=number, label=label, type=ftype)
            if type_name:
                f.type_name = f".mcu_updater.dfu.{type_name}"
            if fname == "sd_req":
                f.options.packed = True

    opt, req, rep = fdp.LABEL_OPTIONAL, fdp.LABEL_REQUIRED, fdp.LABEL_REPEATED
    u32, bts, enm, msg, bln = (
        fdp.TYPE_UINT32,
        fdp.TYPE_BYTES,
        fdp.TYPE_ENUM,
        fdp.TYPE_MESSAGE,
        fdp.TYPE_BOOL,
    )
    message("Hash", ("hash_type", 1, req, enm, "HashType"), ("hash", 2, req, bts, ""))
    message(
        "InitCommand",
        ("fw_version", 1, opt, u32, ""),
        ("hw_version", 2, opt, u32, ""),
        ("sd_req", 3, rep, u32, ""),
        ("type", 4, opt, enm, "FwType"),
        ("sd_size", 5, opt, u32, ""),
        ("bl_size", 6, opt, u32, ""),
        ("app_size", 7, opt, u32, ""),
        ("hash", 8, opt, msg, "Hash"),
        ("is_debug", 9, opt, bln, ""),
    )
    message("Command", ("op_code", 1, opt, enm, "OpCode"), ("init", 2, opt, msg, "InitCommand"))
    message(
        "SignedCommand",
        ("command", 1, req, msg, "Command"),
        ("signature_type", 2, req, enm, "SignatureType"),
        ("signature", 3, req, bts, ""),
    )
    message(
        "Packet",
        ("command", 1, opt, msg, "Command"),
        ("signed_command", 2, opt, msg, "SignedCommand"),
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"mcu_updater.dfu.{name}"))
        for name in ("Hash", "InitCommand", "Command", "SignedCommand", "Packet")
    }


_SCHEMA: Final = _build_schema()


@dataclass(frozen=True)
class InitCommand:
    """The fields of an InitCommand; ``None`` where the packet leaves a field out."""

    fw_type: FwType | None
    fw_version: int | None = None
    hw_version: int | None = None
    sd_req: tuple[int, ...] = ()
    sd_size: int | None = None
    bl_size: int | None = None
    app_size: int | None = None
    hash_type: int | None = None
    hash: bytes | None = None
    is_debug: bool = False
    extra: bytes = b""
    """Serialized fields unknown to SDK 15.2 (appended when encoding, e.g. boot_validation)."""

    @property
    def image_size(self) -> int:
        """Bytes of firmware the device expects, as the bootloader derives it from the type."""
        sizes = {
            FwType.APPLICATION: self.app_size or 0,
            FwType.SOFTDEVICE: self.sd_size or 0,
            FwType.BOOTLOADER: self.bl_size or 0,
            FwType.SOFTDEVICE_BOOTLOADER: (self.sd_size or 0) + (self.bl_size or 0),
        }
        return sizes.get(self.fw_type, 0) if self.fw_type is not None else 0

    @property
    def sha256(self) -> bytes | None:
        """The image digest in normal byte order (the packet stores it reversed)."""
        return self.hash[::-1] if self.hash is not None else None


@dataclass(frozen=True)
class InitPacket:
    """A decoded ``.dat``: the command, its signature if any, and the exact bytes that were signed."""

    raw: bytes
    command: InitCommand
    signed_bytes: bytes
    """The InitCommand exactly as serialized in the packet (what nrfutil signs)."""
    device_signed_bytes: bytes
    """What the SDK 15.2 bootloader hashes: the Command after one length byte (§7.4)."""
    signature_type: int | None = None
    signature: bytes | None = None

    @property
    def is_signed(self) -> bool:
        return self.signature is not None


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise PackageError("init packet is truncated inside a varint", _REBUILD)
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _fields_of(data: bytes) -> list[tuple[int, int, int, int]]:
    """Top-level (field number, wire type, start, end) of a serialized message; start/end cover the
    value (for length-delimited fields, the content after the length)."""
    out: list[tuple[int, int, int, int]] = []
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            start = pos
            _, pos = _read_varint(data, pos)
            out.append((number, wire_type, start, pos))
        elif wire_type == 2:
            length, start = _read_varint(data, pos)
            pos = start + length
            if pos > len(data):
                raise PackageError("init packet is truncated inside a field", _REBUILD)
            out.append((number, wire_type, start, pos))
        elif wire_type in (1, 5):
            start, pos = pos, pos + (8 if wire_type == 1 else 4)
            out.append((number, wire_type, start, pos))
        else:
            raise PackageError(f"init packet uses unsupported wire type {wire_type}", _REBUILD)
    return out


def _sub_message(data: bytes, number: int) -> bytes:
    """Raw content of the last length-delimited field ``number`` (protobuf's last-one-wins rule)."""
    found = b""
    for fnum, wire_type, start, end in _fields_of(data):
        if fnum == number and wire_type == 2:
            found = data[start:end]
    return found


_REBUILD: Final = "rebuild the package with nrfutil pkg generate"
_KNOWN_INIT_FIELDS: Final = frozenset(range(1, 10))


def decode_init_packet(raw: bytes) -> InitPacket:
    """Decode a ``.dat``; raise PackageError for anything the SDK 15.2 decoder would also refuse."""
    if len(raw) > INIT_PACKET_MAX:
        raise PackageError(
            f"init packet is {len(raw)} bytes; the bootloader accepts at most {INIT_PACKET_MAX}",
            _REBUILD,
        )
    packet: Any = _SCHEMA["Packet"]()
    try:
        packet.ParseFromString(raw)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise PackageError(f"init packet does not decode as a DFU Packet ({exc})", _REBUILD) from exc
    if not packet.IsInitialized():
        missing = ", ".join(packet.FindInitializationErrors())
        raise PackageError(f"init packet lacks required fields: {missing}", _REBUILD)

    signature_type = signature = None
    if packet.HasField("signed_command"):
        signed = packet.signed_command
        command = signed.command
        signature_type, signature = int(signed.signature_type), bytes(signed.signature)
        command_raw = _sub_message(_sub_message(raw, 2), 1)
    elif packet.HasField("command"):
        command = packet.command
        command_raw = _sub_message(raw, 1)
    else:
        raise PackageError("init packet holds neither a command nor a signed command", _REBUILD)
    if not command.HasField("init"):
        raise PackageError("init packet has no InitCommand", _REBUILD)
    signed_bytes = _sub_message(command_raw, 2)
    # The 15.2 hook skips exactly one length byte after the init key and hashes to the Command's end.
    device_signed_bytes = command_raw[_key_end(command_raw, 2) + 1 :]

    init = command.init
    if len(init.sd_req) > SD_REQ_MAX:
        raise PackageError(
            f"init packet lists {len(init.sd_req)} sd_req values; the bootloader takes at most {SD_REQ_MAX}",
            _REBUILD,
        )
    if init.HasField("hash") and len(init.hash.hash) > HASH_MAX:
        raise PackageError(f"init packet hash is longer than {HASH_MAX} bytes", _REBUILD)
    if signature is not None and len(signature) > SIGNATURE_SIZE:
        raise PackageError(f"init packet signature is longer than {SIGNATURE_SIZE} bytes", _REBUILD)
    extra = b"".join(
        signed_bytes[_key_start(signed_bytes, start) : end]
        for number, _, start, end in _fields_of(signed_bytes)
        if number not in _KNOWN_INIT_FIELDS
    )

    def opt(name: str) -> int | None:
        return int(getattr(init, name)) if init.HasField(name) else None

    fw_type = FwType(init.type) if init.HasField("type") and init.type in FwType._value2member_map_ else None
    return InitPacket(
        raw=raw,
        command=InitCommand(
            fw_type=fw_type,
            fw_version=opt("fw_version"),
            hw_version=opt("hw_version"),
            sd_req=tuple(int(v) for v in init.sd_req),
            sd_size=opt("sd_size"),
            bl_size=opt("bl_size"),
            app_size=opt("app_size"),
            hash_type=int(init.hash.hash_type) if init.HasField("hash") else None,
            hash=bytes(init.hash.hash) if init.HasField("hash") else None,
            is_debug=bool(init.is_debug),
            extra=extra,
        ),
        signed_bytes=signed_bytes,
        device_signed_bytes=device_signed_bytes,
        signature_type=signature_type,
        signature=signature,
    )


def _key_end(data: bytes, number: int) -> int:
    """Offset just after the key byte(s) of the last length-delimited field ``number``."""
    pos, found = 0, -1
    while pos < len(data):
        key, after_key = _read_varint(data, pos)
        fnum, wire_type = key >> 3, key & 7
        if wire_type == 2:
            length, start = _read_varint(data, after_key)
            if fnum == number:
                found = after_key
            pos = start + length
        elif wire_type == 0:
            _, pos = _read_varint(data, after_key)
        else:
            pos = after_key + (8 if wire_type == 1 else 4)
    return found


def _key_start(data: bytes, value_start: int) -> int:
    """Offset of the key that introduces the field whose value starts at ``value_start``."""
    pos = 0
    while pos < len(data):
        key_start = pos
        key, after_key = _read_varint(data, pos)
        wire_type = key & 7
        if wire_type == 2:
            length, start = _read_varint(data, after_key)
            if start == value_start:
                return key_start
            pos = start + length
        elif wire_type == 0:
            if after_key == value_start:
                return key_start
            _, pos = _read_varint(data, after_key)
        else:
            if after_key == value_start:
                return key_start
            pos = after_key + (8 if wire_type == 1 else 4)
    raise PackageError("init packet field layout is inconsistent", _REBUILD)


Signer = Callable[[bytes], bytes]
"""Signs the serialized InitCommand, returning the 64-byte little-endian r‖s the bootloader wants."""


def encode_init_command(command: InitCommand) -> bytes:
    init: Any = _SCHEMA["InitCommand"]()
    for name in ("fw_version", "hw_version", "sd_size", "bl_size", "app_size"):
        value = getattr(command, name)
        if value is not None:
            setattr(init, name, value)
    init.sd_req.extend(command.sd_req)
    if command.fw_type is not None:
        init.type = int(command.fw_type)
    if command.hash is not None:
        init.hash.hash_type = command.hash_type if command.hash_type is not None else HashType.SHA256
        init.hash.hash = command.hash
    init.is_debug = command.is_debug
    return bytes(init.SerializeToString()) + command.extra


def encode_init_packet(command: InitCommand, signer: Signer | None = None) -> bytes:
    """Serialize as nrfutil does: ``Packet.command`` unsigned, ``Packet.signed_command`` signed."""
    init_bytes = encode_init_command(command)
    cmd: Any = _SCHEMA["Command"]()
    cmd.op_code = 1
    cmd.init.MergeFromString(init_bytes)
    # Serialize the Command by hand so the signed InitCommand bytes appear verbatim (extra included).
    command_bytes = b"\x08\x01" + _length_delimited(2, init_bytes)
    if signer is None:
        return _length_delimited(1, command_bytes)
    signature = signer(init_bytes)
    signed = (
        _length_delimited(1, command_bytes)
        + b"\x10"
        + bytes([SignatureType.ECDSA_P256_SHA256])
        + _length_delimited(3, signature)
    )
    return _length_delimited(2, signed)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def image_hash_field(image: bytes) -> bytes:
    """The init packet's hash field for an image: its SHA-256, byte-reversed."""
    return hashlib.sha256(image).digest()[::-1]
