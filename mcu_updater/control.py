"""The daemon's control socket: `mcu-updater trigger` and `status` (and OTA hooks) talk to it.

An AF_UNIX stream socket under the runtime directory, mode 0600, that also checks each peer's
credentials (SO_PEERCRED): only root and the daemon's own user are served. One JSON request line,
one JSON reply line. There is no network listener of any kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

from mcu_updater.errors import LinkError, TargetNotAnsweringError

SOCKET_NAME: Final = "control.sock"
REQUEST_MAX: Final = 4096
REPLY_TIMEOUT: Final = 5.0
Handler = Callable[[], Awaitable[dict[str, Any]]]
_UCRED: Final = struct.Struct("3i")


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    _, uid, _ = _UCRED.unpack(raw)
    return int(uid)


class ControlServer:
    """Serves ``{"command": NAME}`` requests with the handler registered for NAME."""

    def __init__(self, path: Path, handlers: dict[str, Handler]) -> None:
        self.path = path
        self.handlers = handlers
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        try:
            self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            old_umask = os.umask(0o177)
            try:
                self._server = await asyncio.start_unix_server(self._serve, path=self.path)
            finally:
                os.umask(old_umask)
        except OSError as exc:
            raise LinkError(
                f"cannot create the control socket {self.path}: {exc.strerror}",
                "set runtime_dir to a writable directory (systemd: RuntimeDirectory=mcu-updater)",
            ) from exc

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(OSError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            uid = _peer_uid(writer)
            if uid not in (0, os.getuid()):
                reply: dict[str, Any] = {"ok": False, "error": "permission denied"}
            else:
                reply = await self._answer(await asyncio.wait_for(reader.readline(), REPLY_TIMEOUT))
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (OSError, TimeoutError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _answer(self, line: bytes) -> dict[str, Any]:
        if len(line) > REQUEST_MAX:
            return {"ok": False, "error": "request too long"}
        try:
            command = json.loads(line).get("command")
        except (ValueError, AttributeError):
            return {"ok": False, "error": "malformed request"}
        handler = self.handlers.get(command) if isinstance(command, str) else None
        if handler is None:
            return {"ok": False, "error": f"unknown command {command!r}"}
        return {"ok": True, **await handler()}


async def request(path: Path, command: str) -> dict[str, Any]:
    """Send one command to a running daemon and return its reply."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), REPLY_TIMEOUT)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise TargetNotAnsweringError(
            f"no mcu-updater daemon is listening on {path}",
            "start it (systemctl start mcu-updater) or check runtime_dir in the configuration",
        ) from exc
    except PermissionError as exc:
        raise LinkError(
            f"no permission to use {path}", "run as root or as the user the daemon runs as"
        ) from exc
    try:
        writer.write(json.dumps({"command": command}).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), REPLY_TIMEOUT)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    reply = json.loads(line) if line else {"ok": False, "error": "the daemon closed the connection"}
    if not isinstance(reply, dict):
        return {"ok": False, "error": "malformed reply"}
    return reply
