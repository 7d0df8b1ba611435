"""The daemon's control socket: `mcu-updater trigger`, `status`, `apply` and `verify` talk to it.

An AF_UNIX stream socket under the runtime directory, mode 0600, that also checks each peer's
credentials (SO_PEERCRED): only root and the daemon's own user are served. With ``control.group``
the socket is 0660 and owned by that group, and processes with it (as their group or a supplementary
one) are served too. One JSON request line; the
reply is one JSON line, or for a streamed command (a job) one line per event, the last one being the
``result`` event. There is no network listener of any kind.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import json
import os
import socket
import struct
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

from mcu_updater.errors import ConfigError, LinkError, TargetNotAnsweringError, TransientError

SOCKET_NAME: Final = "control.sock"
REQUEST_MAX: Final = 6 * 1024 * 1024
"""A job's request carries its package (at most 4 MiB) in base64."""
REPLY_TIMEOUT: Final = 5.0
RESULT_EVENT: Final = "result"
Handler = Callable[[], Awaitable[dict[str, Any]]]
Record = dict[str, Any]
StreamHandler = Callable[[Record, Callable[[Record], None], Callable[[], bool]], Awaitable[Record]]
"""Takes the request, an emit for its events and a "has the caller gone?" check; returns the
``result`` event."""
_UCRED: Final = struct.Struct("3i")


def _peer(writer: asyncio.StreamWriter) -> tuple[int, int, int] | None:
    """The peer's (pid, uid, gid) as the kernel saw them at connect()."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    pid, uid, gid = _UCRED.unpack(raw)
    return int(pid), int(uid), int(gid)


def _supplementary_groups(pid: int) -> set[int]:
    """The process's supplementary groups as it runs now (not as /etc/group says they could be)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
    except OSError:
        return set()
    line = next((line for line in status.splitlines() if line.startswith("Groups:")), "Groups:")
    return {int(gid) for gid in line.split()[1:]}


def group_id(name: str) -> int:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise ConfigError(
            f"control.group: the group {name!r} does not exist",
            f"create it (groupadd --system {name}) or change control.group",
        ) from None


class NoDaemonError(TargetNotAnsweringError):
    """Nobody serves the socket: no daemon, a stale socket, or a daemon that does not answer."""


class ControlServer:
    """Serves ``{"command": NAME}`` requests with the handler registered for NAME; ``streams`` holds
    the commands whose handler streams events before its result."""

    def __init__(
        self,
        path: Path,
        handlers: dict[str, Handler],
        streams: dict[str, StreamHandler] | None = None,
        *,
        group: str | None = None,
    ) -> None:
        self.path = path
        self.handlers = handlers
        self.streams = streams or {}
        self.group = group
        self._gid: int | None = None
        self._server: asyncio.Server | None = None

    def _allowed(self, peer: tuple[int, int, int] | None) -> bool:
        if peer is None:
            return False
        pid, uid, gid = peer
        if uid in (0, os.getuid()):
            return True
        return self._gid is not None and (gid == self._gid or self._gid in _supplementary_groups(pid))

    async def start(self) -> None:
        self._gid = group_id(self.group) if self.group is not None else None
        try:
            self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            listening = self._bind_in_place()
            self._server = await asyncio.start_unix_server(self._serve, sock=listening, limit=REQUEST_MAX + 1)
        except OSError as exc:
            raise LinkError(
                f"cannot create the control socket {self.path}: {exc.strerror}",
                "set runtime_dir to a writable directory (systemd: RuntimeDirectory=mcu-updater)",
            ) from exc

    def _bind_in_place(self) -> socket.socket:
        """The socket, bound and given its final mode and group inside a private (0700) directory, then
        renamed into place: it is never reachable with a wider mode, and the process-wide umask is left
        alone (other threads create files meanwhile)."""
        private = Path(tempfile.mkdtemp(prefix=".control-", dir=self.path.parent))
        staged = private / self.path.name
        listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listening.bind(str(staged))
            staged.chmod(0o600 if self._gid is None else 0o660)
            if self._gid is not None:
                os.chown(staged, -1, self._gid)
            staged.replace(self.path)
        except OSError:
            listening.close()
            raise
        finally:
            with contextlib.suppress(OSError):
                staged.unlink()
            private.rmdir()
        return listening

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(OSError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            # Read the request even from a peer that is refused: closing while it still writes
            # would cost it the refusal (EPIPE) instead of telling it why.
            line = await asyncio.wait_for(reader.readline(), REPLY_TIMEOUT)
            if not self._allowed(_peer(writer)):
                reply: dict[str, Any] = {"ok": False, "error": "permission denied"}
            else:
                reply = await self._answer(line, reader, writer)
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (OSError, TimeoutError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _answer(
        self, line: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> dict[str, Any]:
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

            return await self.streams[command](request, emit, reader.at_eof)
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
