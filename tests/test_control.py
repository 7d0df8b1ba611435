"""The control socket and the state store: permissions, protocol, atomic persistence."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from mcu_updater.control import ControlServer, request
from mcu_updater.errors import ConfigError, LinkError, TargetNotAnsweringError
from mcu_updater.state import DaemonState, InventoryEntry, RunRecord, StateStore


async def test_commands_round_trip_on_an_owner_only_socket(tmp_path: Path) -> None:
    calls: list[str] = []

    async def trigger() -> dict[str, Any]:
        calls.append("trigger")
        return {"queued": False}

    server = ControlServer(tmp_path / "run" / "control.sock", {"trigger": trigger})
    await server.start()
    try:
        mode = stat.S_IMODE(os.stat(server.path).st_mode)
        assert mode == 0o600
        assert await request(server.path, "trigger") == {"ok": True, "queued": False}
        assert await request(server.path, "explode") == {"ok": False, "error": "unknown command 'explode'"}
        reader, writer = await asyncio.open_unix_connection(server.path)
        writer.write(b"not json\n")
        assert json.loads(await reader.readline()) == {"ok": False, "error": "malformed request"}
        writer.close()
        await writer.wait_closed()
    finally:
        await server.close()
    assert calls == ["trigger"]
    assert not server.path.exists()


async def test_starting_leaves_the_process_umask_alone(tmp_path: Path) -> None:
    # The umask is process-wide: what other tasks and threads create while the socket starts (a state
    # file, a venv a test builds) must keep its modes.
    seen: set[int] = set()

    async def watch() -> None:
        while True:
            current = os.umask(0o022)
            os.umask(current)
            seen.add(current)
            await asyncio.sleep(0)

    previous = os.umask(0o022)
    try:
        watcher = asyncio.create_task(watch())
        for _ in range(3):
            server = ControlServer(tmp_path / "run" / "control.sock", {})
            await server.start()
            await server.close()
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    finally:
        os.umask(previous)
    assert seen == {0o022}
    assert list((tmp_path / "run").iterdir()) == []


async def test_no_daemon_is_reported_clearly(tmp_path: Path) -> None:
    with pytest.raises(TargetNotAnsweringError, match="no mcu-updater daemon is listening"):
        await request(tmp_path / "control.sock", "status")


async def test_unwritable_runtime_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(LinkError, match="cannot create the control socket"):
        await ControlServer(blocker / "control.sock", {}).start()


def test_state_is_saved_atomically_and_privately(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    assert store.load() == DaemonState()
    state = DaemonState(
        (InventoryEntry("softdevice", 6001001, 0x1000, 0x26000), InventoryEntry("application", 3)),
        RunRecord("updated", "2026-11-26T12:00:00+00:00", "2026-11-26T12:00:09+00:00", sent=("application",)),
        runs=4,
    )
    store.save(state)
    assert store.load() == state
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o600
    assert [p.name for p in store.directory.iterdir()] == ["state.json"], "no temporary file left behind"


def test_corrupt_state_starts_afresh(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    store.path.write_text("{ not json")
    assert store.load() == DaemonState()


NOBODY: Final = 65534
DIALOUT: Final = "dialout"  # a group every Debian system has, which nobody is not in


async def ask(path: Path, *, gid: int, groups: list[int]) -> str:
    """Ask for status as uid nobody with ``gid`` and supplementary ``groups``, from a forked child.

    Forked from the loop's own thread (no helper threads in the parent), and awaited through a pipe,
    so that this loop goes on serving the child's request.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, ask once, report, and leave without any clean-up
        try:
            os.close(read_end)
            os.setgroups(groups)
            os.setgid(gid)
            os.setuid(NOBODY)
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
                    client.settimeout(10)
                    client.connect(str(path))
                    client.sendall(b'{"command": "status"}\n')
                    answer = client.makefile("rb").readline()
            except OSError as error:
                answer = f"OSError {errno.errorcode.get(error.errno or 0)}".encode()
            os.write(write_end, answer)
        finally:
            os._exit(0)
    os.close(write_end)
    reader = asyncio.StreamReader()
    transport, _ = await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(read_end, "rb")
    )
    try:
        answer = await asyncio.wait_for(reader.read(), 30)
    finally:
        transport.close()
        os.waitpid(pid, 0)  # noqa: ASYNC222 - EOF came from its exit: this reaps at once
    return answer.decode().strip()


@pytest.fixture
def shared_runtime_dir() -> Iterator[Path]:
    """A runtime directory another user can traverse (pytest's temporary directories are root-only)."""
    if os.geteuid() != 0:
        pytest.skip("needs root to run a peer as another uid (CI runs as root)")
    folder = Path(tempfile.mkdtemp(prefix="mcu-updater-control-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder)


async def status_server(path: Path, group: str | None) -> ControlServer:
    async def status() -> dict[str, Any]:
        return {"phase": "idle"}

    server = ControlServer(path, {"status": status}, group=group)
    await server.start()
    return server


async def test_a_control_group_serves_its_members_only(shared_runtime_dir: Path) -> None:
    dialout = grp.getgrnam(DIALOUT).gr_gid
    server = await status_server(shared_runtime_dir / "control.sock", DIALOUT)
    try:
        info = os.stat(server.path)
        assert (stat.S_IMODE(info.st_mode), info.st_gid) == (0o660, dialout)
        assert await ask(server.path, gid=NOBODY, groups=[]) == "OSError EACCES"
        member = json.loads(await ask(server.path, gid=NOBODY, groups=[dialout]))
        assert member == {"ok": True, "phase": "idle"}
        by_primary_group = json.loads(await ask(server.path, gid=dialout, groups=[]))
        assert by_primary_group["ok"] is True
        # Past a socket opened to everyone by mistake, the credentials check still refuses a non-member.
        server.path.chmod(0o666)
        refused = json.loads(await ask(server.path, gid=NOBODY, groups=[]))
        assert refused == {"ok": False, "error": "permission denied"}
    finally:
        await server.close()


async def test_without_a_group_only_root_and_the_owner_are_served(shared_runtime_dir: Path) -> None:
    server = await status_server(shared_runtime_dir / "control.sock", None)
    try:
        assert stat.S_IMODE(os.stat(server.path).st_mode) == 0o600
        assert await ask(server.path, gid=NOBODY, groups=[]) == "OSError EACCES"
        server.path.chmod(0o666)
        dialout = grp.getgrnam(DIALOUT).gr_gid
        refused = json.loads(await ask(server.path, gid=NOBODY, groups=[dialout]))
        assert refused == {"ok": False, "error": "permission denied"}
    finally:
        await server.close()


async def test_an_unknown_control_group_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="the group 'no-such-group' does not exist"):
        await status_server(tmp_path / "control.sock", "no-such-group")
