"""The daemon's control socket: `mcu-updater trigger`, `status`, `apply` and `verify` talk to it.

An AF_UNIX stream socket under the runtime directory, mode 0600, that also checks each peer's
credentials (SO_PEERCRED): only root and the daemon's own user are served. One JSON request line; the
reply is one JSON line, or for a streamed command (a job) one line per event, the last one being the
``result`` event. There is no network listener of any kind.
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

from mcu_updater.errors import LinkError, TargetNotAnsweringError, TransientError

SOCKET_NAME: Final = "control.sock"
REQUEST_MAX: Final = 6 * 1024 * 1024
"""A job's request carries its package (at most 4 MiB) in base64."""
REPLY_TIMEOUT: Final = 5.0
RESULT_EVENT: Final = "result"
Handler = Callable[[], Awaitable[dict[str, Any]]]
Record = dict[str, Any]
StreamHandler = Callable[[Record, Callable[[Record], None]], Awaitable[Record]]
"""Takes the request and an emit for its events; returns the ``result`` event."""
_UCRED: Final = struct.Struct("3i")


def _peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    _, uid, _ = _UCRED.unpack(raw)
    return int(uid)


class NoDaemonError(TargetNotAnsweringError):
    """Nobody serves the socket: no daemon, a stale socket, or a daemon that does not answer."""


class ControlServer:
    """Serves ``{"command": NAME}`` requests with the handler registered for NAME; ``streams`` holds
    the commands whose handler streams events before its result."""

    def __init__(
        self, path: Path, handlers: dict[str, Handler], streams: dict[str, StreamHandler] | None = None
    ) -> None:
        self.path = path
        self.handlers = handlers
        self.streams = streams or {}
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        try:
            self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            old_umask = os.umask(0o177)
            try:
                self._server = await asyncio.start_unix_server(
                    self._serve, path=self.path, limit=REQUEST_MAX + 1
                )
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
                line = await asyncio.wait_for(reader.readline(), REPLY_TIMEOUT)
                reply = await self._answer(line, writer)
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (OSError, TimeoutError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _answer(self, line: bytes, writer: asyncio.StreamWriter) -> dict[str, Any]:
        try:
            request = json.loads(line)
            command = request.get("command")
        except (ValueError, AttributeError):
            return {"ok": False, "error": "malformed request"}
        if isinstance(command, str) and command in self.streams:

            def emit(record: Record) -> None:
                # A caller that went away does not stop the job: a cut update would be worse.
                if not writer.is_closing():
                    writer.write(json.dumps(record).encode() + b"\n")

            return await self.streams[command](request, emit)
        handler = self.handlers.get(command) if isinstance(command, str) else None
        if handler is None:
            return {"ok": False, "error": f"unknown command {command!r}"}
        return {"ok": True, **await handler()}


async def request(path: Path, command: str) -> dict[str, Any]:
    """Send one command to a running daemon and return its reply."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), REPLY_TIMEOUT)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise NoDaemonError(
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


async def stream(path: Path, request: Record, on_event: Callable[[Record], None]) -> Record:
    """Send a streamed command; pass each event to ``on_event`` and return the ``result`` event.

    NoDaemonError if nobody serves ``path`` or the first line does not come within REPLY_TIMEOUT
    (the caller may then do the work itself); TransientError if the daemon goes away mid-stream.
    """
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), REPLY_TIMEOUT)
    except (FileNotFoundError, ConnectionRefusedError, TimeoutError) as exc:
        raise NoDaemonError(f"no mcu-updater daemon is listening on {path}") from exc
    except PermissionError as exc:
        raise LinkError(
            f"no permission to use {path}", "run as root or as the user the daemon runs as"
        ) from exc
    try:
        writer.write(json.dumps(request).encode() + b"\n")
        try:
            await writer.drain()
            first = await asyncio.wait_for(reader.readline(), REPLY_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            raise NoDaemonError(f"the daemon on {path} does not answer") from exc
        line = first
        while line:
            try:
                record = json.loads(line)
            except ValueError:
                record = None
            if not isinstance(record, dict):
                raise TransientError(f"the daemon on {path} sent a malformed record", "check its log")
            if record.get("event") == RESULT_EVENT:
                return record
            if record.get("ok") is False:
                raise LinkError(f"the daemon refused the request: {record.get('error')}", "check its log")
            on_event(record)
            line = await reader.readline()
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    raise TransientError(
        f"the daemon on {path} closed the connection before the result (stopped or restarted?)",
        "check `journalctl -u mcu-updater`, then run again",
    )
