"""The run lock: one process at a time talks to the nRF52 (the daemon's runs, a standalone `apply`).

An advisory ``flock`` on ``run.lock`` in the runtime directory. The kernel drops it when its holder
exits, crashed or not, so a stale lock cannot block the next run. The file is world-readable because
``flock`` works on a read-only descriptor: root's `apply` and the daemon's own user share one lock file
whoever created it.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Final

from mcu_updater.errors import ConfigError, TransientError

LOCK_NAME: Final = "run.lock"
POLL_INTERVAL: Final = 0.1


class RunLock:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _open(self) -> int:
        try:
            self.path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise ConfigError(
                f"cannot open the run lock {self.path}: {exc.strerror}",
                "set runtime_dir to a directory this user can write (systemd: RuntimeDirectory=mcu-updater)",
            ) from exc
        if os.fstat(fd).st_uid == os.geteuid():
            os.fchmod(fd, 0o644)  # whatever the umask: root's jobs and the daemon's user share it
        return fd

    @contextlib.asynccontextmanager
    async def held(
        self, *, on_wait: Callable[[str], None] | None = None, wait_limit: float | None = None
    ) -> AsyncIterator[None]:
        """Hold the lock for the block; wait for another holder (``on_wait`` hears about it once).

        ``wait_limit`` bounds the wait (TransientError, exit 75); None waits as long as it takes.
        """
        fd = self._open()
        try:
            deadline = None if wait_limit is None else time.monotonic() + wait_limit
            told = False
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    pass
                if not told and on_wait is not None:
                    on_wait(f"another mcu-updater run holds {self.path}; waiting for it to finish")
                    told = True
                if deadline is not None and time.monotonic() >= deadline:
                    raise TransientError(
                        f"another mcu-updater run held {self.path} for more than {wait_limit:.0f} s",
                        "run again once it has finished (`mcu-updater status` shows it)",
                    )
                await asyncio.sleep(POLL_INTERVAL)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock
