"""The only logging configuration of mcu-updater (structlog), chosen by where stderr leads.

- stderr *is* the journal stream (``JOURNAL_STREAM`` matches its ``fstat``, the rule systemd documents):
  journald's native protocol, so every event key becomes a queryable field (``image`` → ``MCU_IMAGE``)
  next to ``PRIORITY`` and an optional fixed ``MESSAGE_ID``;
- stderr is a terminal: a readable console;
- anything else: one line per event, ``<N>event key=value…``, where ``N`` is the syslog priority that
  journald (or any syslog-style reader) turns back into the entry's priority.

``MESSAGE`` in the journal is the same ``event key=value…`` text as the plain line, so the default
``journalctl -u mcu-updater`` view reads alike in both modes while the fields make entries queryable.
Raw bytes belong at :data:`TRACE` (``log.trace(...)``), below DEBUG and only emitted when enabled.
"""

from __future__ import annotations

import array
import enum
import errno
import fcntl
import json
import logging
import os
import re
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any, Final, TextIO, cast

import structlog
from structlog.typing import EventDict, FilteringBoundLogger, Processor, WrappedLogger

from mcu_updater.errors import DeviceRejectedError, McuUpdaterError

TRACE: Final = 5
"""Level below DEBUG for raw bytes on the wire."""

# Fixed 128-bit ids (generated once) so `journalctl MESSAGE_ID=…` finds the same kind of event on every
# gateway and in every release. Pass one as ``message_id=``; never change a published value.
RUN_STARTED: Final = "a193366c3dda47d2a24182d48248a41a"
RUN_SUCCEEDED: Final = "0597328ca45c49c09c2e7b755bc29fac"
RUN_FAILED: Final = "f116938c923444c4bdaba533646c289d"
IMAGE_UPDATED: Final = "dba74f10ccd54485be5a624d59487bf1"

SYSLOG_IDENTIFIER: Final = "mcu-updater"
JOURNAL_SOCKET: Final = "/run/systemd/journal/socket"
FIELD_PREFIX: Final = "MCU_"

LEVELS: Final = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
PRIORITIES: Final = {"trace": 7, "debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}
"""syslog priority of each level (the ``<N>`` prefix and the journal's PRIORITY)."""

_STEP_TOLERANCE: Final = 1e-9  # 0.3 - 0.2 < 0.1 in floats, yet it is a 10 % step
_FIELD_NAME_MAX: Final = 64  # journald drops fields with longer names
_NOT_A_FIELD_CHAR: Final = re.compile(r"[^A-Z0-9_]")
_BARE_VALUE: Final = re.compile(r'[^\s"=\\]+')
# Keys rendered specially, not as `key=value`: MESSAGE_ID means nothing to a reader of plain text.
_NOT_KEY_VALUES: Final = frozenset({"event", "level", "message_id"})
_MEMFD_SEALS: Final = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SEAL


class Output(enum.Enum):
    JOURNAL = "journal"
    CONSOLE = "console"
    LINES = "lines"


def choose_output(stream: TextIO, environ: Mapping[str, str] = os.environ) -> Output:
    """Journal when ``JOURNAL_STREAM`` names this very stream, console on a TTY, lines otherwise."""
    try:
        fd = stream.fileno()
        stat = os.fstat(fd)
    except (OSError, ValueError):  # io.StringIO and closed streams have no descriptor
        return Output.LINES
    device, _, inode = environ.get("JOURNAL_STREAM", "").partition(":")
    if f"{stat.st_dev}:{stat.st_ino}" == f"{device}:{inode}":
        return Output.JOURNAL
    return Output.CONSOLE if os.isatty(fd) else Output.LINES


def configure_logging(
    *, level: str = "info", stream: TextIO | None = None, namespace_socket: str | None = None
) -> None:
    """Configure structlog (and route stdlib ``logging``) for ``stream``, by default ``sys.stderr``.

    ``namespace_socket`` replaces :data:`JOURNAL_SOCKET`, e.g. ``/run/systemd/journal.NAME/socket``.
    Raises ValueError for an unknown level.
    """
    try:
        min_level = LEVELS[level.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {level!r}; use one of {', '.join(LEVELS)}") from None
    stream = sys.stderr if stream is None else stream
    output = choose_output(stream)
    journal = _JournalSocket(namespace_socket or JOURNAL_SOCKET) if output is Output.JOURNAL else None
    sink = _Sink(stream, journal)
    processors: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        _ExceptionFields(with_traceback=min_level <= logging.DEBUG),
        _plain_values,
    ]
    if output is Output.JOURNAL:
        processors.append(_render_journal)
    elif output is Output.CONSOLE:
        processors += [
            _drop_message_id,
            structlog.processors.TimeStamper(fmt="%H:%M:%S"),
            structlog.dev.ConsoleRenderer(colors="NO_COLOR" not in os.environ, sort_keys=False),
        ]
    else:
        processors.append(_render_line)
    structlog.configure(
        processors=processors,
        wrapper_class=_bound_logger_class(min_level),
        logger_factory=lambda *_: sink,
        cache_logger_on_first_use=False,
    )
    _route_stdlib_logging(min_level)


class ProgressGate:
    """Decides which progress updates are worth a log entry (journald rate-limits chatty services).

    An update passes once it is at least ``min_step`` (a fraction of the whole) beyond the last one that
    passed *and* ``min_interval`` seconds after it; completion (1.0) passes once. Progress that goes
    backwards (the next image, or an object sent again) counts on from there, so one gate can serve a
    whole run.
    """

    def __init__(
        self, min_interval: float = 2.0, min_step: float = 0.1, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.min_interval = min_interval
        self.min_step = min_step
        self._clock = clock
        self._last_time = clock()
        self._last_fraction = 0.0
        self._done = False

    def should_log(self, fraction: float) -> bool:
        now = self._clock()
        if fraction < self._last_fraction:
            self._last_fraction, self._done = fraction, False
        if fraction >= 1.0:
            passed = not self._done
            self._done = True
        else:
            step = fraction - self._last_fraction
            passed = step >= self.min_step - _STEP_TOLERANCE and now - self._last_time >= self.min_interval
        if passed:
            self._last_time, self._last_fraction = now, fraction
        return passed


# --- processors ----------------------------------------------------------------------------------


class _ExceptionFields:
    """``exc_info`` → one-line ``error`` and ``hint`` (plus ``exception``, the traceback, at debug)."""

    def __init__(self, *, with_traceback: bool) -> None:
        self.with_traceback = with_traceback

    def __call__(self, logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
        exc_info = event_dict.pop("exc_info", None)
        exc = sys.exc_info()[1] if exc_info is True else _exception_of(exc_info)
        if exc is None:
            return event_dict
        if isinstance(exc, McuUpdaterError):
            event_dict.setdefault("error", exc.message)
            if exc.hint:
                event_dict.setdefault("hint", exc.hint)
            if isinstance(exc, DeviceRejectedError) and exc.ext is not None:
                event_dict.setdefault("ext_error", f"0x{exc.ext:02X}")
        else:
            event_dict.setdefault("error", f"{type(exc).__name__}: {exc}")
        if self.with_traceback:
            event_dict["exception"] = "".join(traceback.format_exception(exc)).rstrip("\n")
        return event_dict


def _exception_of(exc_info: object) -> BaseException | None:
    if isinstance(exc_info, tuple) and len(exc_info) == 3:  # sys.exc_info() style
        exc_info = exc_info[1]
    return exc_info if isinstance(exc_info, BaseException) else None


def _plain_values(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    """Bytes as hex; a None value means "nothing to say" and leaves the key out."""
    for key, value in list(event_dict.items()):
        if value is None:
            del event_dict[key]
        elif isinstance(value, bytes | bytearray | memoryview):
            event_dict[key] = bytes(value).hex()
    return event_dict


def _drop_message_id(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> EventDict:
    event_dict.pop("message_id", None)
    return event_dict


def _text(event_dict: EventDict) -> str:
    """``event key=value …``, values quoted JSON-style when they hold spaces, quotes or newlines."""
    parts = [str(event_dict.get("event", ""))]
    for key, value in event_dict.items():
        if key not in _NOT_KEY_VALUES:
            text = str(value)
            parts.append(f"{key}={text if _BARE_VALUE.fullmatch(text) else json.dumps(text)}")
    return " ".join(parts)


def _priority(event_dict: EventDict) -> int:
    return PRIORITIES.get(str(event_dict.get("level")), PRIORITIES["info"])


def _prefixed_line(event_dict: EventDict, text: str) -> str:
    # Each stderr line becomes its own journal entry: a newline in the event text must not split it.
    return f"<{_priority(event_dict)}>{text}".replace("\n", "\\n")


def _render_line(logger: WrappedLogger, method_name: str, event_dict: EventDict) -> str:
    return _prefixed_line(event_dict, _text(event_dict))


def _render_journal(
    logger: WrappedLogger, method_name: str, event_dict: EventDict
) -> tuple[tuple[str], dict[str, bytes]]:
    """The datagram, and the ``<N>`` line the sink prints should the journal socket fail."""
    text = _text(event_dict)
    fields = [
        ("MESSAGE", text),
        ("PRIORITY", str(_priority(event_dict))),
        ("SYSLOG_IDENTIFIER", SYSLOG_IDENTIFIER),
    ]
    if message_id := event_dict.get("message_id"):
        fields.append(("MESSAGE_ID", str(message_id)))
    fields += [
        (journal_field(key), str(value)) for key, value in event_dict.items() if key not in _NOT_KEY_VALUES
    ]
    datagram = b"".join(_encode_field(name, value) for name, value in fields)
    return (_prefixed_line(event_dict, text),), {"datagram": datagram}


def journal_field(key: str) -> str:
    """The journal field for an event key: ``ext-error`` → ``MCU_EXT_ERROR``."""
    return (FIELD_PREFIX + _NOT_A_FIELD_CHAR.sub("_", key.upper()))[:_FIELD_NAME_MAX]


def _encode_field(name: str, value: str) -> bytes:
    data = value.encode("utf-8", "backslashreplace")
    if b"\n" in data:  # the native protocol's binary form: name, newline, little-endian u64 length, data
        return b"%s\n%s%s\n" % (name.encode(), len(data).to_bytes(8, "little"), data)
    return b"%s=%s\n" % (name.encode(), data)


# --- output --------------------------------------------------------------------------------------


class _JournalSocket:
    """journald's native protocol: one datagram per entry, or a sealed memfd when it is too large."""

    def __init__(self, path: str) -> None:
        self.path = path

    def send(self, datagram: bytes) -> None:
        # A socket per entry (a few microseconds) holds no descriptor between entries, so reconfiguring
        # or forking never leaks one.
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            try:
                sock.sendto(datagram, self.path)
            except OSError as error:
                if error.errno not in (errno.EMSGSIZE, errno.ENOBUFS):
                    raise
                self._send_memfd(sock, datagram)

    def _send_memfd(self, sock: socket.socket, datagram: bytes) -> None:
        # What sd_journal_send() does past the socket's size limit (~208 KiB): journald reads the entry
        # from a memfd passed with SCM_RIGHTS, and insists on the seals so we cannot change it later.
        fd = os.memfd_create("journal-entry", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            with open(fd, "wb", closefd=False) as memfd:
                memfd.write(datagram)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, _MEMFD_SEALS)
            # Not socket.send_fds(): before Python 3.12 it ignores the address.
            sock.sendmsg([], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))], 0, self.path)
        finally:
            os.close(fd)


class _Sink:
    """The structlog "logger": writes what the last processor made; never raises into the caller."""

    def __init__(self, stream: TextIO, journal: _JournalSocket | None) -> None:
        self._stream = stream
        self._journal = journal
        self._journal_down = False
        self._lock = threading.Lock()

    def msg(self, line: str, datagram: bytes | None = None) -> None:
        if self._journal is not None and datagram is not None:
            try:
                self._journal.send(datagram)
            except OSError as error:
                if not self._journal_down:
                    self._write(f"<4>journal socket {self._journal.path} failed ({error}); logging to stderr")
                self._journal_down = True
            else:
                self._journal_down = False
                return
        self._write(line)

    trace = debug = info = warning = error = critical = msg

    def _write(self, line: str) -> None:
        with self._lock:
            try:
                self._stream.write(line + "\n")
                self._stream.flush()
            except (OSError, ValueError):  # stderr itself is gone: nowhere left to say so
                pass


def _bound_logger_class(min_level: int) -> type[FilteringBoundLogger]:
    """structlog's fast filtering logger plus a ``trace`` method that is a no-op unless enabled."""
    base = structlog.make_filtering_bound_logger(max(min_level, logging.DEBUG))

    def trace(self: Any, event: str, **kw: Any) -> Any:
        return self._proxy_to_logger("trace", event, **kw)

    def no_trace(self: Any, event: str, **kw: Any) -> None:
        return None

    return cast(
        type[FilteringBoundLogger],
        type("BoundLogger", (base,), {"trace": trace if min_level <= TRACE else no_trace}),
    )


class _StdlibBridge(logging.Handler):
    """Sends records of libraries that use stdlib ``logging`` (asyncio's "Task exception was never
    retrieved", for one) through the same output, with their real priority."""

    def emit(self, record: logging.LogRecord) -> None:
        level = max(
            (n for n in LEVELS.values() if logging.DEBUG <= n <= record.levelno), default=logging.DEBUG
        )
        try:
            structlog.get_logger().log(
                level, record.getMessage(), logger=record.name, exc_info=record.exc_info or None
            )
        except Exception:  # noqa: BLE001 - the logging contract: report through handleError, never raise
            self.handleError(record)


def _route_stdlib_logging(min_level: int) -> None:
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _StdlibBridge)]:
        root.removeHandler(handler)
    root.addHandler(_StdlibBridge())
    root.setLevel(max(min_level, logging.DEBUG))
