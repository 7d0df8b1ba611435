"""DFU message layouts (protocol spec §3-§5, §10): requests, replies, result texts, chunk size."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcu_updater.dfu.wire import (
    MTU_LAYOUT,
    PROTOCOL_VERSION_LAYOUT,
    AbortRequest,
    CrcReply,
    CrcRequest,
    CreateRequest,
    ExecuteRequest,
    ExtError,
    FwVersionReply,
    FwVersionRequest,
    HwVersionReply,
    HwVersionRequest,
    ImageType,
    MtuRequest,
    ObjectType,
    OpCode,
    PingRequest,
    ProtocolVersionRequest,
    RejectionContext,
    Reply,
    Request,
    ResultCode,
    SelectReply,
    SelectRequest,
    SetPrnRequest,
    WriteRequest,
    code_label,
    describe_result,
    write_chunk_size,
)
from mcu_updater.errors import ProtocolError

FAST = settings(max_examples=150, deadline=None, database=None)

PayloadReply = SelectReply | CrcReply | FwVersionReply | HwVersionReply


def h(text: str) -> bytes:
    return bytes.fromhex(text)


# --- requests -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "wire"),
    [
        (ProtocolVersionRequest(), "00"),
        (CreateRequest(ObjectType.DATA, 4096), "01 02 00 10 00 00"),
        (CreateRequest(ObjectType.COMMAND, 141), "01 01 8D 00 00 00"),
        (CreateRequest(ObjectType.DATA, 0x12345678), "01 02 78 56 34 12"),
        (SetPrnRequest(0), "02 00 00"),
        (SetPrnRequest(0x1234), "02 34 12"),
        (CrcRequest(), "03"),
        (ExecuteRequest(), "04"),
        (SelectRequest(ObjectType.COMMAND), "06 01"),
        (SelectRequest(ObjectType.DATA), "06 02"),
        (MtuRequest(), "07"),
        (WriteRequest(h("DE AD C0 DB")), "08 DE AD C0 DB"),
        (WriteRequest(b""), "08"),
        (PingRequest(1), "09 01"),
        (PingRequest(0x177), "09 77"),
        (HwVersionRequest(), "0A"),
        (FwVersionRequest(2), "0B 02"),
        (AbortRequest(), "0C"),
    ],
)
def test_request_golden_bytes(request_: Request, wire: str) -> None:
    assert request_.to_bytes() == h(wire)
    assert request_.to_bytes()[0] == request_.opcode


def test_opcode_values_match_spec() -> None:
    assert {op.name: op.value for op in OpCode} == {
        "PROTOCOL_VERSION": 0x00,
        "CREATE": 0x01,
        "SET_PRN": 0x02,
        "CRC_GET": 0x03,
        "EXECUTE": 0x04,
        "SELECT": 0x06,
        "MTU_GET": 0x07,
        "WRITE": 0x08,
        "PING": 0x09,
        "HW_VERSION": 0x0A,
        "FW_VERSION": 0x0B,
        "ABORT": 0x0C,
    }


def test_result_and_ext_values_match_spec() -> None:
    assert {r.name: r.value for r in ResultCode} == {
        "INVALID": 0x00,
        "SUCCESS": 0x01,
        "OP_CODE_NOT_SUPPORTED": 0x02,
        "INVALID_PARAMETER": 0x03,
        "INSUFFICIENT_RESOURCES": 0x04,
        "INVALID_OBJECT": 0x05,
        "UNSUPPORTED_TYPE": 0x07,
        "OPERATION_NOT_PERMITTED": 0x08,
        "OPERATION_FAILED": 0x0A,
        "EXT_ERROR": 0x0B,
    }
    assert [(e.name, e.value) for e in ExtError] == list(
        zip(
            [
                "NO_ERROR",
                "INVALID_ERROR_CODE",
                "WRONG_COMMAND_FORMAT",
                "UNKNOWN_COMMAND",
                "INIT_COMMAND_INVALID",
                "FW_VERSION_FAILURE",
                "HW_VERSION_FAILURE",
                "SD_VERSION_FAILURE",
                "SIGNATURE_MISSING",
                "WRONG_HASH_TYPE",
                "HASH_FAILED",
                "WRONG_SIGNATURE_TYPE",
                "VERIFICATION_FAILED",
                "INSUFFICIENT_SPACE",
            ],
            range(0x0E),
            strict=True,
        )
    )


# --- replies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "opcode", "result", "ext", "payload"),
    [
        ("60 09 01 01", OpCode.PING, ResultCode.SUCCESS, None, "01"),
        ("60 02 01", OpCode.SET_PRN, ResultCode.SUCCESS, None, ""),
        ("60 07 01 83 00", OpCode.MTU_GET, ResultCode.SUCCESS, None, "83 00"),
        ("60 04 0B 07", OpCode.EXECUTE, ResultCode.EXT_ERROR, 0x07, ""),
        ("60 04 0B 0C", OpCode.EXECUTE, ResultCode.EXT_ERROR, 0x0C, ""),
        ("60 04 0B", OpCode.EXECUTE, ResultCode.EXT_ERROR, None, ""),
        ("60 04 05", OpCode.EXECUTE, ResultCode.INVALID_OBJECT, None, ""),
        ("60 04 08 FF", OpCode.EXECUTE, ResultCode.OPERATION_NOT_PERMITTED, None, ""),
        ("60 0B 02", OpCode.FW_VERSION, ResultCode.OP_CODE_NOT_SUPPORTED, None, ""),
        (
            "60 03 01 8D 00 00 00 11 22 33 44",
            OpCode.CRC_GET,
            ResultCode.SUCCESS,
            None,
            "8D 00 00 00 11 22 33 44",
        ),
    ],
)
def test_reply_from_frame(frame: str, opcode: int, result: int, ext: int | None, payload: str) -> None:
    """Fields follow only SUCCESS; EXT_ERROR carries one extended byte; other results nothing."""
    reply = Reply.from_frame(h(frame))
    assert (reply.opcode, reply.result, reply.ext, reply.payload) == (opcode, result, ext, h(payload))
    assert reply.ok == (result == ResultCode.SUCCESS)


@pytest.mark.parametrize(
    ("frame", "expected"),
    [
        ("60 06 01 00 10 00 00 00 00 00 00 00 00 00 00", SelectReply(max_size=4096, offset=0, crc=0)),
        ("60 06 01 00 01 00 00 00 00 00 00 00 00 00 00", SelectReply(max_size=256, offset=0, crc=0)),
        (
            "60 06 01 00 10 00 00 8D 00 00 00 8C D1 BC B9",
            SelectReply(max_size=4096, offset=141, crc=0xB9BCD18C),
        ),
        ("60 03 01 00 F0 00 00 8C D1 BC B9", CrcReply(offset=61440, crc=0xB9BCD18C)),
        (
            "60 0B 01 02 01 00 00 00 00 80 07 00 00 60 00 00",
            FwVersionReply(ImageType.BOOTLOADER, version=1, address=0x78000, length=0x6000),
        ),
        (
            "60 0B 01 00 68 91 5B 00 00 10 00 00 00 60 02 00",
            FwVersionReply(ImageType.SOFTDEVICE, version=6001000, address=0x1000, length=0x26000),
        ),
        (
            "60 0B 01 01 02 00 00 00 00 60 02 00 00 F0 00 00",
            FwVersionReply(ImageType.APPLICATION, version=2, address=0x26000, length=61440),
        ),
        (
            "60 0B 01 FF 00 00 00 00 00 00 00 00 00 00 00 00",
            FwVersionReply(ImageType.UNKNOWN, version=0, address=0, length=0),
        ),
        (
            "60 0A 01 32 28 05 00 30 45 41 41 00 00 08 00 00 00 01 00 00 10 00 00",
            HwVersionReply(0x00052832, 0x41414530, rom_size=524288, ram_size=65536, rom_page_size=4096),
        ),
    ],
)
def test_success_payload_layouts(frame: str, expected: PayloadReply) -> None:
    reply = Reply.from_frame(h(frame))
    assert reply.ok
    assert type(expected).from_payload(reply.payload) == expected
    assert expected.to_payload() == reply.payload
    assert reply.to_bytes() == h(frame)


def test_small_payloads() -> None:
    assert MTU_LAYOUT.unpack(Reply.from_frame(h("60 07 01 83 00")).payload) == (131,)
    assert PROTOCOL_VERSION_LAYOUT.unpack(Reply.from_frame(h("60 00 01 01")).payload) == (1,)
    assert HwVersionReply(0x52832, 0x41414530, 0, 0, 0).variant_text == "AAE0"


REPLY_SIZES: list[tuple[type[PayloadReply], int]] = [
    (SelectReply, 12),
    (CrcReply, 8),
    (FwVersionReply, 13),
    (HwVersionReply, 20),
]


@pytest.mark.parametrize(("cls", "size"), REPLY_SIZES)
@FAST
@given(data=st.data())
def test_payload_round_trip(cls: type[PayloadReply], size: int, data: st.DataObject) -> None:
    payload = data.draw(st.binary(min_size=size, max_size=size))
    reply = cls.from_payload(payload)
    assert reply.to_payload() == payload
    assert cls.from_payload(reply.to_payload()) == reply


@pytest.mark.parametrize(("cls", "size"), REPLY_SIZES)
@pytest.mark.parametrize("cut", [0, 1, -1])
def test_truncated_payload_is_protocol_error(cls: type[PayloadReply], size: int, cut: int) -> None:
    payload = bytes(range(size))[: cut % size]
    with pytest.raises(ProtocolError, match="truncated"):
        cls.from_payload(payload)


@pytest.mark.parametrize("frame", ["", "60", "60 01", "61 01 01", "00 09 01 01", "C0 60 09 01 01", "09 01"])
def test_malformed_frame_is_protocol_error(frame: str) -> None:
    with pytest.raises(ProtocolError, match="malformed"):
        Reply.from_frame(h(frame))


@FAST
@given(st.binary(max_size=40))
def test_fuzz_from_frame_raises_only_protocol_error(frame: bytes) -> None:
    try:
        reply = Reply.from_frame(frame)
    except ProtocolError:
        return
    assert frame[:3] == bytes([0x60, reply.opcode, reply.result])


@FAST
@given(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), st.binary(max_size=20))
def test_reply_to_bytes_round_trip(opcode: int, result: int, ext: int, payload: bytes) -> None:
    if result == ResultCode.EXT_ERROR:
        reply = Reply(opcode, result, ext, b"")
    else:
        reply = Reply(opcode, result, None, payload if result == ResultCode.SUCCESS else b"")
    assert Reply.from_frame(reply.to_bytes()) == reply


# --- result texts ---------------------------------------------------------------------------


@pytest.mark.parametrize("result", list(ResultCode))
def test_every_result_code_is_explained(result: ResultCode) -> None:
    message, hint = describe_result(result)
    assert message
    assert "{" not in message
    assert bool(hint) == (result != ResultCode.SUCCESS)


@pytest.mark.parametrize("ext", list(ExtError))
@pytest.mark.parametrize(
    "ctx",
    [
        None,
        RejectionContext(
            package_version=1,
            device_version=2,
            package_hw=51,
            device_hw=52,
            package_sd_req=(0xA8, 0xB7),
            device_fwid=0xAF,
        ),
    ],
)
def test_every_ext_error_is_explained(ext: ExtError, ctx: RejectionContext | None) -> None:
    message, hint = describe_result(ResultCode.EXT_ERROR, ext, ctx)
    assert message
    assert hint
    assert "{" not in message + hint


@pytest.mark.parametrize(
    ("ext", "ctx", "in_message", "in_hint"),
    [
        (
            ExtError.SD_VERSION_FAILURE,
            RejectionContext(device_fwid=0xAF, package_sd_req=(0xA8,)),
            ["0xAF", "0xA8"],
            ["--sd-req 0xAF"],
        ),
        (ExtError.SD_VERSION_FAILURE, None, [], ["--sd-req <the device's SoftDevice FWID>"]),
        (
            ExtError.HW_VERSION_FAILURE,
            RejectionContext(package_hw=51, device_hw=52),
            ["51", "52"],
            ["--hw-version 52"],
        ),
        (
            ExtError.FW_VERSION_FAILURE,
            RejectionContext(package_version=1, device_version=2),
            ["(1)", "runs 2"],
            ["--application-version"],
        ),
    ],
)
def test_rejection_context_fills_in_advice(
    ext: ExtError, ctx: RejectionContext | None, in_message: list[str], in_hint: list[str]
) -> None:
    message, hint = describe_result(0x0B, ext, ctx)
    for text in in_message:
        assert text in message
    for text in in_hint:
        assert text in hint


@pytest.mark.parametrize(
    ("result", "ext", "shown"),
    [
        (0x06, None, "0x06"),
        (0x42, None, "0x42"),
        (0xFF, None, "0xFF"),
        (0x0B, 0x0E, "0x0E"),
        (0x0B, 0x99, "0x99"),
    ],
)
def test_unknown_codes_are_described(result: int, ext: int | None, shown: str) -> None:
    message, hint = describe_result(result, ext)
    assert shown in message
    assert "unknown" in message
    assert hint


def test_ext_error_without_its_byte_is_described() -> None:
    message, hint = describe_result(ResultCode.EXT_ERROR, None)
    assert message
    assert hint


@pytest.mark.parametrize(
    ("result", "ext", "label"),
    [
        (0x0B, 0x07, "EXT 0x07 SD_VERSION_FAILURE"),
        (0x0B, 0x0C, "EXT 0x0C VERIFICATION_FAILED"),
        (0x0B, 0x0E, "EXT 0x0E UNKNOWN"),
        (0x0B, None, "0x0B EXT_ERROR"),
        (0x01, None, "0x01 SUCCESS"),
        (0x05, None, "0x05 INVALID_OBJECT"),
        (0x05, 0x07, "0x05 INVALID_OBJECT"),
        (0x06, None, "0x06 UNKNOWN"),
        (0xA0, None, "0xA0 UNKNOWN"),
    ],
)
def test_code_label(result: int, ext: int | None, label: str) -> None:
    assert code_label(result, ext) == label


# --- chunk size -----------------------------------------------------------------------------


@pytest.mark.parametrize(("mtu", "size"), [(131, 60), (129, 60), (12, 4), (19, 4), (20, 8), (1000, 496)])
def test_write_chunk_size(mtu: int, size: int) -> None:
    assert write_chunk_size(mtu) == size


@pytest.mark.parametrize("mtu", [-1, 0, 1, 3, 9, 10, 11])
def test_write_chunk_size_rejects_tiny_mtu(mtu: int) -> None:
    with pytest.raises(ProtocolError, match="MTU"):
        write_chunk_size(mtu)


@FAST
@given(st.integers(12, 10_000))
def test_write_chunk_size_is_largest_word_multiple_that_is_safe(mtu: int) -> None:
    """Fully escaped, a WRITE fits the MTU; two WRITEs merged by a damaged END stay below the device's
    MTU-byte receive buffer (a full buffer wedges it); four more data bytes would break that."""
    size = write_chunk_size(mtu)
    assert size >= 4
    assert size % 4 == 0

    def encoded_worst_case(n: int) -> int:
        return 2 * (1 + n) + 1

    def merged_pair(n: int) -> int:
        return (1 + n) + 1 + (1 + n)

    assert encoded_worst_case(size) <= mtu
    assert merged_pair(size) < mtu <= merged_pair(size + 4)
