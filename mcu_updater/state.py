"""What the daemon remembers between runs and restarts: the target's last inventory and the last run.

Written atomically (temporary file, fsync, rename, fsync of the directory) with owner-only permissions,
so a power cut leaves either the old or the new file, never a torn one.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from mcu_updater.errors import ConfigError, LinkError

STATE_FILE: Final = "state.json"
FORMAT: Final = 1


@dataclass(frozen=True)
class InventoryEntry:
    type: str
    version: int
    address: int = 0
    length: int = 0


@dataclass(frozen=True)
class RunRecord:
    result: str
    """``updated``, ``up-to-date`` or ``failed``."""
    started: str
    finished: str
    sent: tuple[str, ...] = ()
    error: str = ""
    hint: str = ""
    exit_code: int = 0
    device_code: str = ""
    """The bootloader's refusal, e.g. ``EXT 0x07 SD_VERSION_FAILURE``, when it refused."""


@dataclass(frozen=True)
class DaemonState:
    inventory: tuple[InventoryEntry, ...] = ()
    last_run: RunRecord | None = None
    runs: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "inventory": [asdict(entry) for entry in self.inventory],
            "last_run": asdict(self.last_run) if self.last_run else None,
            "runs": self.runs,
        }

    @classmethod
    def from_json(cls, data: Any) -> DaemonState:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError("not a state file of this version")
        run = data.get("last_run")
        return cls(
            inventory=tuple(InventoryEntry(**entry) for entry in data.get("inventory", [])),
            last_run=RunRecord(**{**run, "sent": tuple(run.get("sent", ()))}) if run else None,
            runs=int(data.get("runs", 0)),
        )


class StateStore:
    """The state file in the state directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / STATE_FILE

    def load(self) -> DaemonState:
        """The saved state; a missing or unreadable file is an empty state (the next run rebuilds it)."""
        try:
            return DaemonState.from_json(json.loads(self.path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError, KeyError):
            return DaemonState()

    def save(self, state: DaemonState) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the state directory {self.directory}: {exc.strerror}",
                "set state_dir to a writable directory (systemd: StateDirectory=mcu-updater)",
            ) from exc
        tmp = self.path.with_name(f".{STATE_FILE}.{os.getpid()}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(state.to_json(), out, indent=1)
                out.flush()
                os.fsync(out.fileno())
            tmp.replace(self.path)
            directory_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(directory_fd)
            finally:
                os.close(directory_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise LinkError(
                f"cannot write {self.path}: {exc.strerror}",
                "check that the state directory is writable and the disk is not full",
            ) from exc
