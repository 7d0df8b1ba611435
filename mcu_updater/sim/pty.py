"""Serve a virtual nRF52 on a real pseudo-terminal, for hosts that open a serial port by path.

Both ends are raw. The server keeps its own descriptor of the slave open, so a host closing and
reopening the port never makes the master fail with EIO. Because of that descriptor, bytes the device
sends while no host has the port open would wait in the pty and reach the next host as stale replies;
a real UART adapter loses them instead. So the server watches opens and closes of the slave (inotify)
and, while no host has it open, discards device output, and flushes what a closing host left unread.
Both are counted in ``Stats.bytes_discarded``. Where inotify is unavailable every byte is kept.
Host bytes are read only while the device's line backlog is small, so a host writing fast blocks in the
pty as it would on a real port.
"""

from __future__ import annotations

import array
import asyncio
import ctypes
import ctypes.util
import fcntl
import os
import struct
import termios
import tty
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from mcu_updater.errors import LinkError
from mcu_updater.sim.device import VirtualNrf52

_READ_SIZE: Final = 4096
_PAUSE_BACKLOG: Final = 4096
_RESUME_BACKLOG: Final = 1024
_IN_CLOSE_WRITE: Final = 0x08
_IN_CLOSE_NOWRITE: Final = 0x10
_IN_OPEN: Final = 0x20
_EVENT: Final = struct.Struct("iIII")


class _OpenWatch:
    """Counts how many descriptors other processes hold on a path, from inotify events."""

    def __init__(self, path: str) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self.fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1 failed")
        mask = _IN_OPEN | _IN_CLOSE_WRITE | _IN_CLOSE_NOWRITE
        if int(libc.inotify_add_watch(self.fd, path.encode(), mask)) < 0:
            error = ctypes.get_errno()
            os.close(self.fd)
            raise OSError(error, f"inotify_add_watch {path} failed")
        self.opened = 0

    def drain(self) -> bool:
        """Apply pending events; True if the last host closed the port meanwhile."""
        closed = False
        while True:
            try:
                data = os.read(self.fd, 4096)
            except BlockingIOError:
                return closed
            offset = 0
            while offset < len(data):
                _, mask, _, name_len = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size + name_len
                if mask & _IN_OPEN:
                    self.opened += 1
                elif mask & (_IN_CLOSE_WRITE | _IN_CLOSE_NOWRITE) and self.opened:
                    self.opened -= 1
                    closed = closed or not self.opened

    def close(self) -> None:
        os.close(self.fd)


class PtyServer:
    """The device's UART on a pty: hosts open ``path`` (or the ``link`` symlink) like a serial port."""

    def __init__(self, device: VirtualNrf52, *, link: Path | None = None) -> None:
        self.device = device
        self.link = link
        self.path = ""
        self._master = self._slave = -1
        self._watch: _OpenWatch | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._out = bytearray()
        self._reading = False

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def start(self) -> None:
        """Create the pty (and the symlink) and attach to the device."""
        self._loop = asyncio.get_running_loop()
        try:
            self._master, self._slave = os.openpty()
            tty.setraw(self._master)
            tty.setraw(self._slave)
            os.set_blocking(self._master, False)
            self.path = os.ttyname(self._slave)
        except OSError as exc:
            self.close()
            raise LinkError(f"cannot create a pty: {exc}", "check that /dev/pts is mounted") from exc
        # Watch for opens before the link exists: a host polling the link could otherwise open the pty
        # unseen, and its replies would be discarded as if nobody listened.
        try:
            self._watch = _OpenWatch(self.path)
            self._loop.add_reader(self._watch.fd, self._on_watch)
        except (OSError, AttributeError):
            self._watch = None
        if self.link is not None:
            try:
                if self.link.is_symlink():
                    self.link.unlink()
                self.link.symlink_to(self.path)
            except OSError as exc:
                self.close()
                raise LinkError(
                    f"cannot create the link {self.link}: {exc.strerror}",
                    "choose a --link path in a writable directory that is not a regular file",
                ) from exc
        self.device.attach(self)
        self._resume()

    def close(self) -> None:
        """Detach from the device, remove the symlink, close the pty."""
        self.device.detach(self)
        if self._loop is not None and self._master >= 0:
            self._loop.remove_reader(self._master)
            self._loop.remove_writer(self._master)
        if self._watch is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._watch.fd)
            self._watch.close()
            self._watch = None
        if self.link is not None and self.link.is_symlink() and os.readlink(self.link) == self.path:
            self.link.unlink()
        for fd in (self._master, self._slave):
            if fd >= 0:
                os.close(fd)
        self._master = self._slave = -1

    # --- HostPort -------------------------------------------------------------------------------

    def deliver(self, data: bytes) -> None:
        if not self._host_present():
            self.device.stats.bytes_discarded += len(data)
            return
        self._out += data
        self._flush_out()

    def backlog_changed(self, backlog: int) -> None:
        if not self._reading and backlog <= _RESUME_BACKLOG:
            self._resume()

    def device_closed(self) -> None:
        """The pty stays open: like a real port, it just goes quiet."""

    # --- internals ------------------------------------------------------------------------------

    def _host_present(self) -> bool:
        if self._watch is None:
            return True
        self._on_watch()
        return self._watch.opened > 0

    def _on_watch(self) -> None:
        if self._watch is not None and self._watch.drain():
            self._discard_unread()

    def _discard_unread(self) -> None:
        """The host closed the port: what it did not read would have been lost on a real one."""
        pending = array.array("i", [0])
        fcntl.ioctl(self._slave, termios.FIONREAD, pending)
        termios.tcflush(self._slave, termios.TCIFLUSH)
        self.device.stats.bytes_discarded += pending[0] + len(self._out)
        self._out.clear()
        if self._loop is not None:
            self._loop.remove_writer(self._master)

    def _resume(self) -> None:
        if self._loop is not None and self._master >= 0:
            self._reading = True
            self._loop.add_reader(self._master, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._master, _READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            # EIO cannot happen while we hold the slave open; stop reading rather than spin on it.
            data = b""
        if data:
            self.device.receive(data)
        if not data or self.device.backlog > _PAUSE_BACKLOG:
            self._reading = False
            if self._loop is not None:
                self._loop.remove_reader(self._master)

    def _flush_out(self) -> None:
        if self._loop is None:
            return
        while self._out:
            try:
                written = os.write(self._master, self._out)
            except BlockingIOError:
                # The host is not reading and the pty is full: wait, keep every byte.
                self._loop.add_writer(self._master, self._flush_out)
                return
            del self._out[:written]
        self._loop.remove_writer(self._master)
