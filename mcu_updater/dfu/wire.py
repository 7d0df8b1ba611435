"""The SDK 15.2 serial DFU vocabulary: opcodes, result codes, extended errors, message layouts. Pure.

Requests are ``[opcode][params]``; replies are ``[0x60][opcode][result][fields]`` where fields follow
only a SUCCESS result and a single extended-error byte follows EXT_ERROR. All integers little-endian.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import ClassVar, Final, Self

from mcu_updater.errors import DeviceRejectedError, ProtocolError

RESPONSE: Final = 0x60


class OpCode(enum.IntEnum):
    PROTOCOL_VERSION = 0x00
    CREATE = 0x01
    SET_PRN = 0x02
    CRC_GET = 0x03
    EXECUTE = 0x04
    SELECT = 0x06
    MTU_GET = 0x07
    WRITE = 0x08
    PING = 0x09
    HW_VERSION = 0x0A
    FW_VERSION = 0x0B
    ABORT = 0x0C


class ObjectType(enum.IntEnum):
    COMMAND = 0x01
    DATA = 0x02


class ImageType(enum.IntEnum):
    """Image kinds in a FIRMWARE_VERSION reply."""

    SOFTDEVICE = 0x00
    APPLICATION = 0x01
    BOOTLOADER = 0x02
    UNKNOWN = 0xFF


class ResultCode(enum.IntEnum):
    INVALID = 0x00
    SUCCESS = 0x01
    OP_CODE_NOT_SUPPORTED = 0x02
    INVALID_PARAMETER = 0x03
    INSUFFICIENT_RESOURCES = 0x04
    INVALID_OBJECT = 0x05
    UNSUPPORTED_TYPE = 0x07
    OPERATION_NOT_PERMITTED = 0x08
    OPERATION_FAILED = 0x0A
    EXT_ERROR = 0x0B


class ExtError(enum.IntEnum):
    NO_ERROR = 0x00
    INVALID_ERROR_CODE = 0x01
    WRONG_COMMAND_FORMAT = 0x02
    UNKNOWN_COMMAND = 0x03
    INIT_COMMAND_INVALID = 0x04
    FW_VERSION_FAILURE = 0x05
    HW_VERSION_FAILURE = 0x06
    SD_VERSION_FAILURE = 0x07
    SIGNATURE_MISSING = 0x08
    WRONG_HASH_TYPE = 0x09
    HASH_FAILED = 0x0A
    WRONG_SIGNATURE_TYPE = 0x0B
    VERIFICATION_FAILED = 0x0C
    INSUFFICIENT_SPACE = 0x0D


# (message, hint) per result code; EXT_ERROR is explained by the extended code instead.
RESULT_TEXT: Final[dict[ResultCode, tuple[str, str]]] = {
    ResultCode.INVALID: (
        "the bootloader answered with the reserved result 0x00",
        "the device firmware is not an SDK 15.2 serial bootloader; check the target",
    ),
    ResultCode.SUCCESS: ("success", ""),
    ResultCode.OP_CODE_NOT_SUPPORTED: (
        "the bootloader does not support this request",
        "the device runs an older or differently configured bootloader; check its SDK version",
    ),
    ResultCode.INVALID_PARAMETER: (
        "the bootloader refused a request parameter (object size or write length)",
        "retry; if it persists, the package's image size is inconsistent with its init packet",
    ),
    ResultCode.INSUFFICIENT_RESOURCES: (
        "the image does not fit: the bootloader has no flash room (or the init packet exceeds 256 bytes)",
        "build a smaller image, or remove the application first with a SoftDevice/bootloader-only package",
    ),
    ResultCode.INVALID_OBJECT: (
        "the bootloader rejected the init packet: it is undecodable or its signature does not verify",
        "sign the package with the private key whose public key is compiled into the bootloader",
    ),
    ResultCode.UNSUPPORTED_TYPE: (
        "the bootloader does not support this object type",
        "the device runs an unexpected bootloader; check its SDK version",
    ),
    ResultCode.OPERATION_NOT_PERMITTED: (
        "the bootloader refused the request in its current state (no accepted init packet, "
        "incomplete object, or data beyond the image size)",
        "retry the update; the device may have reset during the transfer",
    ),
    ResultCode.OPERATION_FAILED: (
        "the bootloader failed the operation (bad signature length or a settings write failure)",
        "check that the package is signed with a 64-byte ECDSA P-256 signature; retry if it was a "
        "flash write failure",
    ),
    ResultCode.EXT_ERROR: ("the bootloader reported an extended error", "see the extended error code"),
}

EXT_TEXT: Final[dict[ExtError, tuple[str, str]]] = {
    ExtError.NO_ERROR: ("extended error 0x00 (no error)", "retry the update"),
    ExtError.INVALID_ERROR_CODE: ("extended error 0x01 (invalid error code)", "retry the update"),
    ExtError.WRONG_COMMAND_FORMAT: (
        "the bootloader says the request was malformed",
        "retry; if it persists, report it with the verbose log",
    ),
    ExtError.UNKNOWN_COMMAND: (
        "the bootloader does not know this command",
        "the device runs an unexpected bootloader; check its SDK version",
    ),
    ExtError.INIT_COMMAND_INVALID: (
        "the init packet is incomplete (missing type, hw_version, fw_version or image size)",
        "rebuild the package with nrfutil pkg generate, giving --hw-version and the image version",
    ),
    ExtError.FW_VERSION_FAILURE: (
        "the package's firmware version{package_version} is too low for the device{device_version}: "
        "downgrades (and re-sending the same bootloader) are refused",
        "rebuild the package with a higher --application-version / --bootloader-version",
    ),
    ExtError.HW_VERSION_FAILURE: (
        "the package's hw_version{package_hw} does not match the device's{device_hw}",
        "rebuild the package with --hw-version{device_hw_bare}",
    ),
    ExtError.SD_VERSION_FAILURE: (
        "the package's sd_req{package_sd_req} does not list the SoftDevice on the device{device_fwid}",
        "rebuild it with --sd-req{device_fwid_bare}",
    ),
    ExtError.SIGNATURE_MISSING: (
        "the package is unsigned but the bootloader requires a signature",
        "sign it: nrfutil pkg generate ... --key-file <the key matching the bootloader>",
    ),
    ExtError.WRONG_HASH_TYPE: (
        "the init packet's hash is not SHA-256",
        "rebuild the package with nrfutil pkg generate (it always uses SHA-256)",
    ),
    ExtError.HASH_FAILED: (
        "the bootloader could not compute the image hash",
        "retry the update",
    ),
    ExtError.WRONG_SIGNATURE_TYPE: (
        "the package is signed with an algorithm other than ECDSA P-256",
        "sign it with an ECDSA P-256 key (nrfutil keys generate)",
    ),
    ExtError.VERIFICATION_FAILED: (
        "the received image's SHA-256 does not match the init packet (corrupted on the way or a "
        "mismatched .bin/.dat pair)",
        "retry; if it repeats, rebuild the package",
    ),
    ExtError.INSUFFICIENT_SPACE: (
        "the device has no room for the image",
        "build a smaller image",
    ),
}


@dataclass(frozen=True)
class RejectionContext:
    """What the host knows that turns a bare device code into advice."""

    package_version: int | None = None
    device_version: int | None = None
    package_hw: int | None = None
    device_hw: int | None = None
    package_sd_req: tuple[int, ...] | None = None
    device_fwid: int | None = None


def _fields(ctx: RejectionContext) -> dict[str, str]:
    def opt(fmt: str, value: object | None) -> str:
        return fmt.format(value) if value is not None else ""

    sd_req = (
        " [" + ", ".join(f"0x{v:02X}" for v in ctx.package_sd_req) + "]"
        if ctx.package_sd_req is not None
        else ""
    )
    return {
        "package_version": opt(" ({})", ctx.package_version),
        "device_version": opt(" (it runs {})", ctx.device_version),
        "package_hw": opt(" ({})", ctx.package_hw),
        "device_hw": opt(" ({})", ctx.device_hw),
        "device_hw_bare": opt(" {}", ctx.device_hw) or " <the device's hw_version>",
        "package_sd_req": sd_req,
        "device_fwid": opt(" (FWID 0x{:02X})", ctx.device_fwid),
        "device_fwid_bare": opt(" 0x{:02X}", ctx.device_fwid) or " <the device's SoftDevice FWID>",
    }


def describe_result(
    result: int, ext: int | None = None, ctx: RejectionContext | None = None
) -> tuple[str, str]:
    """Human message and remediation hint for a device result (and extended error)."""
    fields = _fields(ctx or RejectionContext())
    if result == ResultCode.EXT_ERROR:
        if ext is None:
            return (
                "the bootloader reported an extended error without its code",
                "retry; if it repeats, check the serial line",
            )
        try:
            message, hint = EXT_TEXT[ExtError(ext)]
        except ValueError:
            return (f"the bootloader reported unknown extended error 0x{ext:02X}", "retry")
        return message.format(**fields), hint.format(**fields)
    try:
        return RESULT_TEXT[ResultCode(result)]
    except ValueError:
        return (f"the bootloader answered with unknown result 0x{result:02X}", "retry")


def code_label(result: int, ext: int | None) -> str:
    """Short label such as ``EXT 0x07 SD_VERSION_FAILURE`` for logs and JSON."""
    if result == ResultCode.EXT_ERROR and ext is not None:
        name = ExtError(ext).name if ext in ExtError._value2member_map_ else "UNKNOWN"
        return f"EXT 0x{ext:02X} {name}"
    name = ResultCode(result).name if result in ResultCode._value2member_map_ else "UNKNOWN"
    return f"0x{result:02X} {name}"


def rejection_error(
    opcode: int, result: int, ext: int | None, *, subject: str = "", ctx: RejectionContext | None = None
) -> DeviceRejectedError:
    """The error for a refused request: the device's code in words, with a hint that fits ``ctx``."""
    message, hint = describe_result(result, ext, ctx)
    name = OpCode(opcode).name if opcode in OpCode._value2member_map_ else f"0x{opcode:02X}"
    return DeviceRejectedError(
        f"{subject}{message} ({name} → {code_label(result, ext)})",
        hint,
        opcode=opcode,
        result=result,
        ext=ext,
    )


def unknown_code_error(opcode: int, result: int, ext: int | None) -> ProtocolError | None:
    """A result (or extended error) no SDK 15.2 bootloader sends: damage on the line, not a refusal."""
    if result == ResultCode.EXT_ERROR:
        known = ext is not None and ext in ExtError._value2member_map_
    else:
        known = result in ResultCode._value2member_map_
    if known:
        return None
    name = OpCode(opcode).name if opcode in OpCode._value2member_map_ else f"0x{opcode:02X}"
    code = (
        "EXT_ERROR without its code"
        if ext is None and result == ResultCode.EXT_ERROR
        else code_label(result, ext)
    )
    return ProtocolError(
        f"the device answered {name} with {code}, which no SDK 15.2 bootloader sends",
        "check the baud rate and the serial line, then run again (it resumes)",
    )


# --- requests -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Request:
    opcode: ClassVar[OpCode]

    def to_bytes(self) -> bytes:
        return bytes([self.opcode])


@dataclass(frozen=True)
class ProtocolVersionRequest(Request):
    opcode = OpCode.PROTOCOL_VERSION


@dataclass(frozen=True)
class CreateRequest(Request):
    opcode = OpCode.CREATE
    object_type: ObjectType
    size: int
    LAYOUT: ClassVar = struct.Struct("<BBI")

    def to_bytes(self) -> bytes:
        return self.LAYOUT.pack(self.opcode, self.object_type, self.size)


@dataclass(frozen=True)
class SetPrnRequest(Request):
    opcode = OpCode.SET_PRN
    target: int
    LAYOUT: ClassVar = struct.Struct("<BH")

    def to_bytes(self) -> bytes:
        return self.LAYOUT.pack(self.opcode, self.target)


@dataclass(frozen=True)
class CrcRequest(Request):
    opcode = OpCode.CRC_GET


@dataclass(frozen=True)
class ExecuteRequest(Request):
    opcode = OpCode.EXECUTE


@dataclass(frozen=True)
class SelectRequest(Request):
    opcode = OpCode.SELECT
    object_type: ObjectType

    def to_bytes(self) -> bytes:
        return bytes([self.opcode, self.object_type])


@dataclass(frozen=True)
class MtuRequest(Request):
    opcode = OpCode.MTU_GET


@dataclass(frozen=True)
class WriteRequest(Request):
    opcode = OpCode.WRITE
    data: bytes

    def to_bytes(self) -> bytes:
        return bytes([self.opcode]) + self.data


@dataclass(frozen=True)
class PingRequest(Request):
    opcode = OpCode.PING
    ping_id: int

    def to_bytes(self) -> bytes:
        return bytes([self.opcode, self.ping_id & 0xFF])


@dataclass(frozen=True)
class HwVersionRequest(Request):
    opcode = OpCode.HW_VERSION


@dataclass(frozen=True)
class FwVersionRequest(Request):
    opcode = OpCode.FW_VERSION
    image_index: int

    def to_bytes(self) -> bytes:
        return bytes([self.opcode, self.image_index & 0xFF])


@dataclass(frozen=True)
class AbortRequest(Request):
    opcode = OpCode.ABORT


# --- replies --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One decoded reply frame: its opcode, result, optional extended error and success fields."""

    opcode: int
    result: int
    ext: int | None
    payload: bytes

    @property
    def ok(self) -> bool:
        return self.result == ResultCode.SUCCESS

    @classmethod
    def from_frame(cls, frame: bytes) -> Self:
        if len(frame) < 3 or frame[0] != RESPONSE:
            raise ProtocolError(
                f"malformed reply from the device: {frame[:16].hex(' ')}",
                "check the baud rate and that the target is in its bootloader",
            )
        opcode, result = frame[1], frame[2]
        if result == ResultCode.EXT_ERROR:
            return cls(opcode, result, frame[3] if len(frame) > 3 else None, b"")
        return cls(opcode, result, None, frame[3:] if result == ResultCode.SUCCESS else b"")

    def to_bytes(self) -> bytes:
        tail = bytes([self.ext]) if self.ext is not None else self.payload
        return bytes([RESPONSE, self.opcode, self.result]) + tail


def _unpack(layout: struct.Struct, payload: bytes, what: str) -> tuple[int, ...]:
    if len(payload) < layout.size:
        raise ProtocolError(
            f"truncated {what} reply from the device ({len(payload)} of {layout.size} bytes)",
            "check the serial line (baud rate, flow control) and retry",
        )
    return layout.unpack_from(payload)


@dataclass(frozen=True)
class SelectReply:
    """SELECT answers max_size, offset, crc — in that order on the wire."""

    max_size: int
    offset: int
    crc: int
    LAYOUT: ClassVar = struct.Struct("<III")

    @classmethod
    def from_payload(cls, payload: bytes) -> Self:
        return cls(*_unpack(cls.LAYOUT, payload, "SELECT"))

    def to_payload(self) -> bytes:
        return self.LAYOUT.pack(self.max_size, self.offset, self.crc)


@dataclass(frozen=True)
class CrcReply:
    offset: int
    crc: int
    LAYOUT: ClassVar = struct.Struct("<II")

    @classmethod
    def from_payload(cls, payload: bytes) -> Self:
        return cls(*_unpack(cls.LAYOUT, payload, "CRC"))

    def to_payload(self) -> bytes:
        return self.LAYOUT.pack(self.offset, self.crc)


@dataclass(frozen=True)
class FwVersionReply:
    image_type: int
    version: int
    address: int
    length: int
    LAYOUT: ClassVar = struct.Struct("<BIII")

    @classmethod
    def from_payload(cls, payload: bytes) -> Self:
        return cls(*_unpack(cls.LAYOUT, payload, "FIRMWARE_VERSION"))

    def to_payload(self) -> bytes:
        return self.LAYOUT.pack(self.image_type, self.version, self.address, self.length)


@dataclass(frozen=True)
class HwVersionReply:
    part: int
    variant: int
    rom_size: int
    ram_size: int
    rom_page_size: int
    LAYOUT: ClassVar = struct.Struct("<IIIII")

    @classmethod
    def from_payload(cls, payload: bytes) -> Self:
        return cls(*_unpack(cls.LAYOUT, payload, "HW_VERSION"))

    def to_payload(self) -> bytes:
        return self.LAYOUT.pack(self.part, self.variant, self.rom_size, self.ram_size, self.rom_page_size)

    @property
    def variant_text(self) -> str:
        return self.variant.to_bytes(4, "big").decode("ascii", "replace")


MTU_LAYOUT: Final = struct.Struct("<H")
SERIAL_MTU: Final = 131
"""UART_SLIP_MTU of the nRF5 SDK serial transport: its receive buffer, in decoded bytes."""
MIN_MTU: Final = 12
"""The smallest MTU that still carries a WRITE of one 4-byte word (see write_chunk_size)."""
PROTOCOL_VERSION_LAYOUT: Final = struct.Struct("<B")


def write_chunk_size(mtu: int) -> int:
    """Data bytes per WRITE, a multiple of 4 (the bootloader silently drops other lengths).

    Two bounds: a WRITE must fit the MTU even if every byte is escaped, and two WRITEs merged by an
    END lost on the line must still stay below the device's MTU-sized receive buffer, because a full
    buffer refuses every further byte, END included, and wedges the receiver until the device resets.
    A merged pair is then just a bad frame that the object's CRC check catches.
    """
    size = (mtu - 4) // 2 // 4 * 4
    if size < 4:
        raise ProtocolError(
            f"the device reports an unusable MTU of {mtu} bytes",
            "check that the target runs an SDK 15.2 serial bootloader",
        )
    return size
