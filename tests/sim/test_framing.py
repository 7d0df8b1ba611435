"""The device's SLIP receive path (§2): empty-frame replay, stale fields, bad escapes, the 131-byte wedge."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mcu_updater.dfu.slip import encode
from tests.sim.helpers import Driver, h


def test_lone_end_replays_the_previous_request() -> None:
    device = Driver.fresh()
    assert device.feed(h("09 77 C0")) == [h("60 09 01 77")]
    assert device.feed(h("C0")) == [h("60 09 01 77")]


def test_ping_then_lone_end_gives_two_replies_in_one_stream() -> None:
    assert Driver.fresh().feed(h("09 77 C0 C0")) == [h("60 09 01 77")] * 2


def test_lone_end_on_a_fresh_device_dispatches_the_zeroed_buffer() -> None:
    assert Driver.fresh().feed(h("C0")) == [h("60 00 01 01")]  # opcode 0x00 PROTOCOL_VERSION


def test_short_frame_reads_stale_fields() -> None:
    device = Driver.fresh()
    device.feed(h("09 77 C0"))
    assert device.feed(h("09 C0")) == [h("60 09 01 77")]


def test_write_buffers_are_freed_after_the_next_one_is_allocated() -> None:
    device = Driver.fresh()
    device.feed(h("09 55 C0"))
    # A WRITE lands in the recycled buffer, then the pool hands out the untouched second one.
    assert device.feed(h("08 00 00 00 00 C0")) == []
    assert device.feed(h("C0")) == [h("60 00 01 01")]
    device.feed(h("09 66 C0"))
    assert device.feed(h("C0")) == [h("60 09 01 66")]


def test_escapes_decode() -> None:
    device = Driver.fresh()
    assert device.feed(h("09 DB DC C0")) == [h("60 09 01 C0")]
    assert device.feed(h("09 DB DD C0")) == [h("60 09 01 DB")]


def test_bad_escape_drops_the_frame_silently() -> None:
    device = Driver.fresh()
    assert device.feed(h("09 DB 01 77 C0")) == []
    assert device.feed(h("09 05 C0")) == [h("60 09 01 05")]


def test_escape_before_end_swallows_the_end_and_the_next_frame() -> None:
    device = Driver.fresh()
    assert device.feed(h("09 DB C0 09 06 C0")) == []
    assert device.feed(h("09 07 C0")) == [h("60 09 01 07")]


def test_130_byte_frame_is_accepted() -> None:
    device = Driver.fresh()
    assert device.feed(b"\x09\x42" + bytes(128) + h("C0")) == [h("60 09 01 42")]
    assert not device.bootloader.wedged


def test_131_bytes_wedge_the_receiver_until_reset() -> None:
    device = Driver.fresh()
    assert device.feed(b"\x09\x42" + bytes(129) + h("C0")) == []
    assert device.bootloader.wedged
    assert device.feed(h("09 01 C0 C0 09 02 C0")) == []
    device.bootloader.boot(dfu_pin=True)
    assert device.feed(h("09 03 C0")) == [h("60 09 01 03")]


@given(ids=st.lists(st.integers(0, 255), min_size=1, max_size=20), cuts=st.lists(st.integers(1, 7)))
def test_pings_survive_any_chunking(ids: list[int], cuts: list[int]) -> None:
    device = Driver.fresh()
    stream = b"".join(encode(bytes([0x09, ping])) for ping in ids)
    got: list[bytes] = []
    position = 0
    for cut in [*cuts, len(stream)]:
        got += device.feed(stream[position : position + cut])
        position += cut
    assert got == [bytes([0x60, 0x09, 0x01, ping]) for ping in ids]
