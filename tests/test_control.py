"""The control socket and the state store: permissions, protocol, atomic persistence."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from mcu_updater.control import ControlServer, request
from mcu_updater.errors import LinkError, TargetNotAnsweringError
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
