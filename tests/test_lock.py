"""The run lock shared by the daemon and standalone jobs: a real flock, readable by both users."""

from __future__ import annotations

import fcntl
import os
import stat
from pathlib import Path

import pytest

from mcu_updater.errors import TransientError
from mcu_updater.lock import RunLock


async def test_the_lock_file_is_world_readable_whatever_the_umask(tmp_path: Path) -> None:
    lock = RunLock(tmp_path / "run" / "run.lock")
    old = os.umask(0o077)
    try:
        async with lock.held():
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE(lock.path.stat().st_mode) == 0o644


async def test_a_held_lock_is_waited_for_and_the_wait_can_be_bounded(tmp_path: Path) -> None:
    lock = RunLock(tmp_path / "run.lock")
    holder = os.open(lock.path, os.O_RDONLY | os.O_CREAT, 0o644)
    fcntl.flock(holder, fcntl.LOCK_EX)
    told: list[str] = []
    try:
        with pytest.raises(TransientError, match=r"held .* for more than 0 s"):
            async with lock.held(on_wait=told.append, wait_limit=0.2):
                pytest.fail("entered a lock another process holds")
    finally:
        os.close(holder)
    assert told == [f"another mcu-updater run holds {lock.path}; waiting for it to finish"]
    async with lock.held(wait_limit=0.2):
        pass  # released by its holder: taken at once
