"""Watch the firmware directories with inotify, so a package an OTA engine drops or replaces starts a run.

Linux inotify through libc (ctypes: no extra dependency), its descriptor polled by the asyncio loop.
Directories are watched rather than files: engines replace a package by writing a temporary file and
renaming it, which a watch on the old file's inode would miss. Events are debounced: an engine writes
several files, and one run after the last of them is what is wanted.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import fnmatch
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import structlog

log = structlog.get_logger("mcu_updater.watch")

IN_CLOSE_WRITE: Final = 0x0000_0008
IN_MOVED_FROM: Final = 0x0000_0040
IN_MOVED_TO: Final = 0x0000_0080
IN_CREATE: Final = 0x0000_0100
IN_DELETE: Final = 0x0000_0200
IN_Q_OVERFLOW: Final = 0x0000_4000
IN_ONLYDIR: Final = 0x0100_0000
CHANGES: Final = IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
_EVENT: Final = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then the name
READ_SIZE: Final = 64 * 1024
DEFAULT_DEBOUNCE: Final = 2.0


@dataclass(frozen=True)
class Watched:
    """Packages in ``directory`` whose names match ``pattern`` (``*.zip``, or one file's name)."""

    directory: Path
    pattern: str


class _Inotify:
    """The three libc calls, errors as OSError."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)

    def _check(self, result: int, what: str) -> int:
        if result < 0:
            code = ctypes.get_errno()
            raise OSError(code, f"{what}: {os.strerror(code)}")
        return result

    def init(self) -> int:
        return self._check(self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC), "inotify_init1")

    def add_watch(self, fd: int, directory: Path, mask: int) -> int:
        return self._check(
            self._libc.inotify_add_watch(fd, os.fsencode(directory), ctypes.c_uint32(mask)),
            "inotify_add_watch",
        )


def parse_events(data: bytes) -> list[tuple[int, int, str]]:
    """``(wd, mask, name)`` of each ``struct inotify_event`` in one read."""
    events = []
    offset = 0
    while offset + _EVENT.size <= len(data):
        wd, mask, _, length = _EVENT.unpack_from(data, offset)
        raw = data[offset + _EVENT.size : offset + _EVENT.size + length]
        events.append((wd, mask, os.fsdecode(raw.rstrip(b"\0"))))
        offset += _EVENT.size + length
    return events


class DirectoryWatch:
    """Calls ``on_change(reason)`` once the watched packages have been quiet for ``debounce`` seconds."""

    def __init__(
        self,
        watched: Sequence[Watched],
        on_change: Callable[[str], None],
        *,
        debounce: float = DEFAULT_DEBOUNCE,
    ) -> None:
        self.watched = tuple(watched)
        self.on_change = on_change
        self.debounce = debounce
        self._fd: int | None = None
        self._patterns: dict[int, list[str]] = {}
        self._changed: set[str] = set()
        self._events = 0
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Start watching; a missing directory or an inotify failure is logged, never raised (the
        daemon then still reconciles at start, on the button and on `mcu-updater trigger`)."""
        inotify = _Inotify()
        try:
            self._fd = inotify.init()
        except OSError as error:
            log.warning("cannot watch the firmware directories; changes start no run", error=str(error))
            return
        for entry in self.watched:
            try:
                wd = inotify.add_watch(self._fd, entry.directory, CHANGES | IN_ONLYDIR)
            except OSError as error:
                hint = "raise fs.inotify.max_user_watches" if error.errno == errno.ENOSPC else ""
                log.warning(
                    f"cannot watch {entry.directory}; changes there start no run", error=str(error), hint=hint
                )
                continue
            self._patterns.setdefault(wd, []).append(entry.pattern)
        asyncio.get_running_loop().add_reader(self._fd, self._read)
        log.info("watching the firmware", directories=",".join(str(w.directory) for w in self.watched))

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._fd is not None:
            asyncio.get_running_loop().remove_reader(self._fd)
            os.close(self._fd)
            self._fd = None

    def _read(self) -> None:
        assert self._fd is not None
        try:
            data = os.read(self._fd, READ_SIZE)
        except BlockingIOError:
            return
        for wd, mask, name in parse_events(data):
            if mask & IN_Q_OVERFLOW:
                self._note("(events lost: the queue overflowed)")
            elif any(fnmatch.fnmatchcase(name, p) for p in self._patterns.get(wd, ())):
                self._note(name)

    def _note(self, name: str) -> None:
        self._changed.add(name)
        self._events += 1
        if self._timer is not None:
            self._timer.cancel()
        self._timer = asyncio.get_running_loop().call_later(self.debounce, self._fire)

    def _fire(self) -> None:
        reason = f"firmware changed: {', '.join(sorted(self._changed))} ({self._events} events)"
        self._timer = None
        self._changed.clear()
        self._events = 0
        self.on_change(reason)
