"""The virtual nRF52's reset and DFU pins for another process: a Unix socket that plays the GPIO chip.

`mcu-updater simulate --lines PATH` serves it. A process that connects requests both lines (one holder at
a time: a second one is refused with the holder's name, as the kernel answers EBUSY) and drives them with
lines of text, ``reset 1`` or ``dfu 0`` (logical values: 1 asserted). When its connection closes — it
exited, or was killed — the lines are released and float inactive (the target's pull-ups), exactly as
the kernel releases the line requests of a process that dies. ``SocketTargetLines`` is that process's
side, a ``hw.gpio.TargetLines``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Self

from mcu_updater.errors import LinkError
from mcu_updater.hw.specs import TargetLine
from mcu_updater.sim.device import VirtualNrf52
from mcu_updater.sim.lines import VirtualTargetLines


class LineServer:
    """Serves ``device``'s pins on a Unix socket at ``path`` until closed."""

    def __init__(self, device: VirtualNrf52, path: Path) -> None:
        self.path = path
        self.holder = ""
        """The consumer name of the process holding the lines; "" while they float."""
        self._pins = VirtualTargetLines(device)  # nobody holds them yet: released
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Self:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            hello = (await reader.readline()).decode(errors="replace").split()
            if len(hello) != 2 or hello[0] != "hold":
                return
            if self.holder:
                writer.write(f"busy {self.holder}\n".encode())
                return
            self.holder = hello[1]
            writer.write(b"ok\n")
            try:
                while line := await reader.readline():
                    name, _, value = line.decode(errors="replace").partition(" ")
                    if name in TargetLine._value2member_map_ and value.strip() in ("0", "1"):
                        self._pins.set(TargetLine(name), value.strip() == "1")
            finally:
                self.holder = ""
                self._pins.close()
        except ConnectionError:
            pass
        finally:
            writer.close()


class SocketTargetLines:
    """``hw.gpio.TargetLines`` on a ``LineServer``: requested at construction, released at close (or
    when this process dies)."""

    def __init__(
        self, path: Path, *, consumer: str = "mcu-updater", initial: Mapping[TargetLine, bool] | None = None
    ) -> None:
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._socket.connect(str(path))
            self._socket.sendall(f"hold {consumer}\n".encode())
            answer = self._socket.makefile("r").readline().split()
        except OSError as error:
            self._socket.close()
            raise LinkError(
                f"cannot reach the virtual nRF52's lines at {path}: {error.strerror or error}",
                "start `mcu-updater simulate --lines` first",
            ) from error
        if answer[:1] != ["ok"]:
            self._socket.close()
            holder = answer[1] if len(answer) > 1 else "another program"
            raise LinkError(
                f"the virtual nRF52's lines at {path} are already in use by {holder!r}",
                "stop that program and retry",
            )
        initial = initial or {}
        for line in (TargetLine.DFU, TargetLine.RESET):
            self.set(line, initial.get(line, False))

    def set(self, line: TargetLine, active: bool) -> None:
        try:
            self._socket.sendall(f"{line.value} {int(active)}\n".encode())
        except OSError as error:
            raise LinkError(
                f"cannot drive the {line} line: {os.strerror(error.errno or 0)}", "restart the simulator"
            ) from error

    def close(self) -> None:
        self._socket.close()
