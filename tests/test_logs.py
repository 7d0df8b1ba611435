"""Logging: journald native fields (against a real journald), `<N>` lines, console, TRACE, rate limits."""

from __future__ import annotations

import io
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

import pytest
import structlog

from mcu_updater.errors import DeviceRejectedError, LinkError
from mcu_updater.logs import (
    IMAGE_UPDATED,
    RUN_FAILED,
    RUN_STARTED,
    RUN_SUCCEEDED,
    Output,
    ProgressGate,
    choose_output,
    configure_logging,
    journal_field,
)
from tests.journald import JournalNamespace, journald

__all__ = ["journald"]  # the fixture, imported to be found by pytest


@pytest.fixture(autouse=True)
def _restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    structlog.reset_defaults()
    root.handlers[:] = handlers
    root.setLevel(level)


def stream_id(stream: TextIO) -> str:
    """What systemd puts in JOURNAL_STREAM for a unit whose stderr is ``stream``."""
    stat = os.fstat(stream.fileno())
    return f"{stat.st_dev}:{stat.st_ino}"


@pytest.fixture
def journal_stream(journald: JournalNamespace) -> Iterator[TextIO]:
    """A connection to journald's stdout socket, set up the way systemd sets up a unit's stderr."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(journald.stream_socket))
    # identifier, unit id, default priority, parse "<N>" prefixes, forward to syslog / kmsg / console
    sock.sendall(b"mcu-updater\n\n6\n1\n0\n0\n0\n")
    stream = sock.makefile("w", encoding="utf-8")
    sock.close()  # the file object keeps the connection open
    with stream:
        yield stream


@pytest.fixture
def pipe() -> Iterator[tuple[TextIO, TextIO]]:
    read_fd, write_fd = os.pipe()
    with open(read_fd, encoding="utf-8") as reader, open(write_fd, "w", encoding="utf-8") as writer:
        yield reader, writer


def lines_of(level: str = "info") -> io.StringIO:
    """Configure plain-line output into a buffer and return it."""
    buffer = io.StringIO()
    configure_logging(level=level, stream=buffer)
    return buffer


# --- journald, for real ----------------------------------------------------------------------------


def test_native_entry_has_queryable_fields(
    journald: JournalNamespace, journal_stream: TextIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", stream_id(journal_stream))
    configure_logging(stream=journal_stream, namespace_socket=str(journald.socket))
    log = structlog.get_logger()
    log.info("run started", message_id=RUN_STARTED)
    log.error("run failed", message_id=RUN_FAILED, result="failed", image="application", ext_error="0x05")

    [entry] = journald.query("MCU_RESULT=failed")
    assert entry["_TRANSPORT"] == "journal"
    assert entry["PRIORITY"] == "3"
    assert entry["MESSAGE"] == "run failed result=failed image=application ext_error=0x05"
    assert entry["MESSAGE_ID"] == RUN_FAILED
    assert entry["SYSLOG_IDENTIFIER"] == "mcu-updater"
    assert (entry["MCU_IMAGE"], entry["MCU_EXT_ERROR"]) == ("application", "0x05")
    assert "MCU_MESSAGE_ID" not in entry
    [started] = journald.query(f"MESSAGE_ID={RUN_STARTED}")
    assert started["PRIORITY"] == "6"


def test_multiline_and_oversized_values_survive(
    journald: JournalNamespace, journal_stream: TextIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", stream_id(journal_stream))
    configure_logging(stream=journal_stream, namespace_socket=str(journald.socket))
    detail = 'first line\nsecond line = with "quotes"\n'
    big = "x" * 300_000  # beyond a datagram's limit (~208 KiB): goes as a sealed memfd
    log = structlog.get_logger()
    log.warning("bad manifest", detail=detail, test="multiline")
    log.info("big", blob=big, test="big")

    [entry] = journald.query("MCU_TEST=multiline")
    assert entry["MCU_DETAIL"] == detail
    [entry] = journald.query("MCU_TEST=big")
    assert entry["MCU_BLOB"] == big


def test_without_matching_journal_stream_prefixed_lines_keep_their_priority(
    journald: JournalNamespace, journal_stream: TextIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stale JOURNAL_STREAM (inherited, but stderr since redirected) must not switch to native.
    monkeypatch.setenv("JOURNAL_STREAM", "1:1")
    configure_logging(stream=journal_stream, namespace_socket=str(journald.socket))
    structlog.get_logger().error("run failed", result="failed")

    [entry] = journald.query("SYSLOG_IDENTIFIER=mcu-updater")
    assert entry["_TRANSPORT"] == "stdout"
    assert entry["PRIORITY"] == "3"
    assert entry["MESSAGE"] == "run failed result=failed"
    assert not any(key.startswith("MCU_") for key in entry)


def test_missing_journal_socket_falls_back_to_lines_and_says_so_once(
    tmp_path: Path, pipe: tuple[TextIO, TextIO], monkeypatch: pytest.MonkeyPatch
) -> None:
    reader, writer = pipe
    monkeypatch.setenv("JOURNAL_STREAM", stream_id(writer))
    configure_logging(stream=writer, namespace_socket=str(tmp_path / "no-journald"))
    log = structlog.get_logger()
    log.info("one")
    log.error("two", image="application")
    writer.close()

    notice, *rest = reader.read().splitlines()
    assert notice.startswith(f"<4>journal socket {tmp_path / 'no-journald'} failed")
    assert rest == ["<6>one", "<3>two image=application"]


# --- the output rule -------------------------------------------------------------------------------


def test_journal_stream_must_match_the_stream_itself(
    pipe: tuple[TextIO, TextIO], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, writer = pipe
    with open(tmp_path / "log", "w", encoding="utf-8") as file:
        assert choose_output(writer) is Output.LINES
        monkeypatch.setenv("JOURNAL_STREAM", stream_id(writer))
        assert choose_output(writer) is Output.JOURNAL
        assert choose_output(file) is Output.LINES
        monkeypatch.setenv("JOURNAL_STREAM", stream_id(file))
        assert choose_output(file) is Output.JOURNAL
        monkeypatch.setenv("JOURNAL_STREAM", "garbage")
        assert choose_output(file) is Output.LINES
    assert choose_output(io.StringIO()) is Output.LINES


def test_console_on_a_tty() -> None:
    master, slave = os.openpty()
    with open(master, "rb", buffering=0) as terminal, open(slave, "w", encoding="utf-8") as tty:
        assert choose_output(tty) is Output.CONSOLE
        configure_logging(stream=tty)
        structlog.get_logger().info("run finished", message_id=RUN_SUCCEEDED, result="updated")
        output = terminal.read(4096).decode()
    assert "run finished" in output
    assert "result" in output
    assert "updated" in output
    assert "\x1b[" in output  # coloured
    assert "<6>" not in output
    assert RUN_SUCCEEDED not in output


# --- plain lines -----------------------------------------------------------------------------------


def test_each_level_has_its_syslog_priority() -> None:
    buffer = lines_of("trace")
    log = structlog.get_logger()
    log.trace("t")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    log.critical("c")
    assert buffer.getvalue().splitlines() == ["<7>t", "<7>d", "<6>i", "<4>w", "<3>e", "<2>c"]


def test_lines_are_single_lines_with_quoted_values() -> None:
    buffer = lines_of()
    structlog.get_logger().info(
        "two\nlines", path="/a b", note='say "hi"', empty="", frame=b"\xc0\x09", nothing=None
    )
    assert buffer.getvalue() == '<6>two\\nlines path="/a b" note="say \\"hi\\"" empty="" frame=c009\n'


def test_trace_is_off_unless_enabled() -> None:
    buffer = lines_of("debug")
    structlog.get_logger().trace("rx", data=b"\x01\x02")
    assert buffer.getvalue() == ""
    buffer = lines_of("trace")
    structlog.get_logger().trace("rx", data=b"\x01\x02")
    assert buffer.getvalue() == "<7>rx data=0102\n"


def test_levels_below_the_configured_one_are_dropped() -> None:
    buffer = lines_of("warning")
    log = structlog.get_logger()
    log.info("quiet")
    log.warning("loud")
    assert buffer.getvalue() == "<4>loud\n"


def test_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log level 'verbose'"):
        configure_logging(level="verbose", stream=io.StringIO())


def test_exception_is_one_line_with_error_and_hint_at_info() -> None:
    buffer = lines_of("info")
    try:
        raise DeviceRejectedError(
            "the bootloader refused the init packet", "rebuild it", opcode=1, result=11, ext=5
        )
    except DeviceRejectedError:
        structlog.get_logger().exception("run failed", message_id=RUN_FAILED)
    assert buffer.getvalue() == (
        '<3>run failed error="the bootloader refused the init packet" hint="rebuild it" ext_error=0x05\n'
    )


def test_exception_carries_its_traceback_at_debug_still_on_one_line() -> None:
    buffer = lines_of("debug")
    error = LinkError("/dev/serial0 vanished")
    structlog.get_logger().error("port lost", exc_info=error)
    structlog.get_logger().error("disk", exc_info=OSError(28, "No space left on device"))
    port_lost, disk = buffer.getvalue().splitlines()
    assert port_lost.startswith('<3>port lost error="/dev/serial0 vanished" exception="')
    assert "LinkError" in port_lost
    assert disk.startswith('<3>disk error="OSError: [Errno 28] No space left on device"')


def test_stdlib_logging_goes_through_the_same_output() -> None:
    buffer = lines_of("info")
    logging.getLogger("asyncio").error("Task exception was never retrieved")
    logging.getLogger("serial").debug("hidden")
    assert buffer.getvalue() == "<3>Task exception was never retrieved logger=asyncio\n"


def test_journal_field_names() -> None:
    assert journal_field("image") == "MCU_IMAGE"
    assert journal_field("ext-error") == "MCU_EXT_ERROR"
    assert journal_field("_private") == "MCU__PRIVATE"
    assert len(journal_field("k" * 100)) == 64


def test_message_ids_are_distinct_128_bit_ids() -> None:
    ids = [RUN_STARTED, RUN_SUCCEEDED, RUN_FAILED, IMAGE_UPDATED]
    assert len(set(ids)) == len(ids)
    assert all(len(bytes.fromhex(i)) == 16 and i == i.lower() for i in ids)


# --- progress rate limit ---------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_needs_both_a_step_and_an_interval() -> None:
    clock = FakeClock()
    start = clock.now
    gate = ProgressGate(min_interval=2.0, min_step=0.1, clock=clock)
    passed: list[float] = []
    # (fraction, seconds since the transfer started)
    for fraction, elapsed in [
        (0.05, 5),  # too small a step
        (0.2, 6),
        (0.35, 7),  # too soon
        (0.36, 8.5),
        (0.4, 20),  # too small a step, however long it took
        (0.6, 20.5),
        (0.99, 21),  # too soon
        (1.0, 21),  # completion always shows
    ]:
        clock.now = start + elapsed
        if gate.should_log(fraction):
            passed.append(fraction)
    assert passed == [0.2, 0.36, 0.6, 1.0]


def test_step_is_compared_without_float_surprises() -> None:
    clock = FakeClock()
    gate = ProgressGate(min_interval=0.0, min_step=0.1, clock=clock)
    assert [gate.should_log(f) for f in (0.1, 0.2, 0.3)] == [True, True, True]  # 0.3 - 0.2 < 0.1 in floats


def test_completion_passes_once() -> None:
    gate = ProgressGate(clock=FakeClock())
    assert [gate.should_log(1.0), gate.should_log(1.0)] == [True, False]


def test_one_gate_serves_image_after_image() -> None:
    clock = FakeClock()
    gate = ProgressGate(min_interval=2.0, min_step=0.1, clock=clock)
    assert gate.should_log(1.0)
    clock.now += 1
    assert not gate.should_log(0.02)  # the next image: counts on from 2 %
    clock.now += 2
    assert not gate.should_log(0.1)
    assert gate.should_log(0.12)
    assert gate.should_log(1.0)
