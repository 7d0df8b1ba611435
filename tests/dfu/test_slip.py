"""SLIP framing (protocol spec §2): golden vectors, chunking, line noise, size bound, round trips."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcu_updater.dfu.slip import END, SlipDecoder, encode

FAST = settings(max_examples=150, deadline=None, database=None)

payloads = st.binary(min_size=1, max_size=80)
# Payloads rich in the two special bytes, so escapes land at starts, ends and next to each other.
special_payloads = st.lists(st.sampled_from([0xC0, 0xDB, 0xDC, 0xDD, 0x00, 0x60]), min_size=1).map(bytes)
any_payloads = payloads | special_payloads

GOLDEN = [
    ("09 01", "09 01 C0"),
    ("01 02 00 10 00 00", "01 02 00 10 00 00 C0"),
    ("C0", "DB DC C0"),
    ("DB", "DB DD C0"),
    ("C0 01 02", "DB DC 01 02 C0"),
    ("01 02 DB", "01 02 DB DD C0"),
    ("01 C0 DB 02", "01 DB DC DB DD 02 C0"),
    ("DB DC", "DB DD DC C0"),
    ("DB DD", "DB DD DD C0"),
    ("C0 C0", "DB DC DB DC C0"),
    ("DC DD", "DC DD C0"),
]


def _feed_all(decoder: SlipDecoder, chunks: list[bytes]) -> list[bytes]:
    return [frame for chunk in chunks for frame in decoder.feed(chunk)]


@pytest.mark.parametrize(("payload", "wire"), GOLDEN)
def test_encode_golden(payload: str, wire: str) -> None:
    assert encode(bytes.fromhex(payload)) == bytes.fromhex(wire)


@pytest.mark.parametrize(("payload", "wire"), GOLDEN)
@pytest.mark.parametrize("bytewise", [False, True])
def test_decode_golden(payload: str, wire: str, bytewise: bool) -> None:
    data = bytes.fromhex(wire)
    chunks = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    decoder = SlipDecoder()
    assert _feed_all(decoder, chunks) == [bytes.fromhex(payload)]
    assert decoder.discarded == 0
    assert decoder.pending == 0


def test_encode_refuses_empty_payload() -> None:
    with pytest.raises(ValueError, match="empty"):
        encode(b"")


@FAST
@given(any_payloads)
def test_encode_has_exactly_one_trailing_end(payload: bytes) -> None:
    """No leading END (it would replay the previous request on the device), none inside."""
    wire = encode(payload)
    assert wire[-1] == END
    assert wire.count(END) == 1
    assert len(wire) == len(payload) + 1 + payload.count(0xC0) + payload.count(0xDB)


@FAST
@given(any_payloads)
def test_round_trip_single_frame(payload: bytes) -> None:
    assert SlipDecoder().feed(encode(payload)) == [payload]


@FAST
@given(st.lists(any_payloads, min_size=1, max_size=8), st.data())
def test_round_trip_random_chunking(frames: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(encode(f) for f in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=12)))
    bounds = [0, *cuts, len(stream)]
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    decoder = SlipDecoder()
    assert _feed_all(decoder, chunks) == frames
    assert decoder.pending == 0
    assert decoder.discarded == 0


OK = encode(b"\x60\x09\x01\x01")
NOISE_CASES = [
    pytest.param(b"\xc0\xc0" + OK + b"\xc0\xc0", [b"\x60\x09\x01\x01"], 0, id="empty-frames-skipped"),
    pytest.param(b"\x01\xdb\x01\x02\xc0" + OK, [b"\x60\x09\x01\x01"], 1, id="bad-escape"),
    pytest.param(b"\xdb\x00\xc0" + OK, [b"\x60\x09\x01\x01"], 1, id="bad-escape-at-start"),
    pytest.param(b"\x01\x02\xdb\xc0" + OK, [b"\x60\x09\x01\x01"], 1, id="escape-before-end"),
    pytest.param(b"\xdb\xdb\xdd\xc0" + OK, [b"\x60\x09\x01\x01"], 1, id="double-escape"),
    pytest.param(
        b"\x01\xdb\x02\xdb\xdc\xdb\xdd\x03\xc0" + OK,
        [b"\x60\x09\x01\x01"],
        1,
        id="valid-escapes-after-bad-one-still-dropped",
    ),
    pytest.param(
        b"\x01\xdb\x7f\xc0\x02\xdb\x7f\xc0" + OK + OK,
        [b"\x60\x09\x01\x01"] * 2,
        2,
        id="two-bad-frames",
    ),
    pytest.param(b"\x55\xaa\xc0" + OK, [b"\x55\xaa", b"\x60\x09\x01\x01"], 0, id="noise-ended-by-end"),
]


@pytest.mark.parametrize(("stream", "frames", "discarded"), NOISE_CASES)
@pytest.mark.parametrize("bytewise", [False, True])
def test_decoder_survives_line_noise(
    stream: bytes, frames: list[bytes], discarded: int, bytewise: bool
) -> None:
    chunks = [stream[i : i + 1] for i in range(len(stream))] if bytewise else [stream]
    decoder = SlipDecoder()
    assert _feed_all(decoder, chunks) == frames
    assert decoder.discarded == discarded
    assert decoder.pending == 0


@pytest.mark.parametrize(
    ("payload", "emitted"),
    [
        (b"1234", True),
        (b"12345", False),
        (b"123\xc0", True),
        (b"1234\xdb", False),
        (b"123456789" * 3 + b"\xc0\xdb", False),
    ],
)
def test_max_frame_bound(payload: bytes, emitted: bool) -> None:
    """A frame over max_frame is dropped up to its END and the next frame still decodes."""
    decoder = SlipDecoder(max_frame=4)
    frames = decoder.feed(encode(payload) + encode(b"ok"))
    assert frames == ([payload] if emitted else []) + [b"ok"]
    assert decoder.discarded == (0 if emitted else 1)


def test_default_max_frame_is_512() -> None:
    decoder = SlipDecoder()
    big = bytes(range(256)) * 2
    assert decoder.feed(encode(big)) == [big]
    assert decoder.feed(encode(big + b"!") + OK) == [b"\x60\x09\x01\x01"]
    assert decoder.discarded == 1


@pytest.mark.parametrize(
    ("chunk", "pending"),
    [
        (b"", 0),
        (b"\x60", 1),
        (b"\x60\x09\x01", 3),
        (b"\x60\xdb", 1),
        (b"\x60\xdb\xdc", 2),
        (b"\x60\x09\xc0\x01", 1),
        (b"\x60\x09\xc0", 0),
    ],
)
def test_pending_counts_bytes_of_the_unfinished_frame(chunk: bytes, pending: int) -> None:
    decoder = SlipDecoder()
    decoder.feed(chunk)
    assert decoder.pending == pending


def test_pending_frame_completes_across_feeds() -> None:
    decoder = SlipDecoder()
    assert decoder.feed(b"\x60\x09\xdb") == []
    assert decoder.feed(b"\xdc\x01") == []
    assert decoder.pending == 4
    assert decoder.feed(b"\xc0") == [b"\x60\x09\xc0\x01"]
    assert decoder.pending == 0


@FAST
@given(st.binary(max_size=300), st.integers(1, 64))
def test_fuzz_never_raises_and_respects_max_frame(data: bytes, max_frame: int) -> None:
    decoder = SlipDecoder(max_frame=max_frame)
    frames = decoder.feed(data)
    assert all(0 < len(frame) <= max_frame for frame in frames)
    assert 0 <= decoder.pending <= max_frame


@FAST
@given(st.binary(max_size=200), any_payloads)
def test_recovers_after_any_garbage_and_an_end(garbage: bytes, payload: bytes) -> None:
    """Whatever preceded it, an END resynchronises the decoder onto the next frame."""
    frames = SlipDecoder().feed(garbage + bytes([END]) + encode(payload))
    assert frames[-1] == payload
