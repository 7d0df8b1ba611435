"""What the daemon remembers between runs and restarts: the target's last inventory and the last run,
and the last two packages `apply` installed.

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
PACKAGES_DIR: Final = "packages"
CURRENT_PACKAGE: Final = "current.zip"
PREVIOUS_PACKAGE: Final = "previous.zip"
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
    """``updated``, ``up-to-date``, ``nothing-applied`` (``firmware: applied`` before any `apply`) or
    ``failed``."""
    started: str
    finished: str
    sent: tuple[str, ...] = ()
    error: str = ""
    hint: str = ""
    exit_code: int = 0
    device_code: str = ""
    """The bootloader's refusal, e.g. ``EXT 0x07 SD_VERSION_FAILURE``, when it refused."""
    device_result: int | None = None
    device_ext: int | None = None
    """The refusal's result code and extended error code as numbers (None: no refusal)."""
    seconds: float = 0.0
    bytes_sent: int = 0
    """Firmware bytes sent over the line, re-sent ones included."""
    package: str = ""
    """The package `apply` installed; empty for the daemon's own reconcile runs."""


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
        make_private_directory(self.directory)
        atomic_write(self.path, json.dumps(state.to_json(), indent=1).encode())


def make_private_directory(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the state directory {directory}: {exc.strerror}",
            "set state_dir to a writable directory (systemd: StateDirectory=mcu-updater)",
        ) from exc


def _fsync_directory(directory: Path) -> None:
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` by ``data`` (temporary file, fsync, rename, fsync of the directory)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), mode)  # whatever the umask
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(path)
        _fsync_directory(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise LinkError(
            f"cannot write {path}: {exc.strerror}",
            "check that the directory is writable and the disk is not full",
        ) from exc


class PackageStore:
    """The last two packages `apply` installed: ``current.zip`` and ``previous.zip`` (a rollback's source).

    A package is staged (written privately) before it is flashed, and kept only once the run succeeded.
    ``current.zip`` exists at every moment of a rotation: the old one is hard-linked as ``previous.zip``
    before the new one is renamed over it.
    """

    def __init__(self, state_dir: Path) -> None:
        self.directory = state_dir / PACKAGES_DIR
        self.current = self.directory / CURRENT_PACKAGE
        self.previous = self.directory / PREVIOUS_PACKAGE

    def stage(self, data: bytes) -> Path:
        make_private_directory(self.directory)
        staged = self.directory / f".staged-{os.getpid()}.zip"
        atomic_write(staged, data)
        return staged

    def keep(self, staged: Path) -> bool:
        """Make ``staged`` the current package; False if it already was (nothing rotates)."""
        try:
            if self.current.exists() and self.current.read_bytes() == staged.read_bytes():
                staged.unlink()
                return False
            if self.current.exists():
                linked = self.directory / f".{PREVIOUS_PACKAGE}.link"
                with contextlib.suppress(FileNotFoundError):
                    linked.unlink()
                os.link(self.current, linked)
                linked.replace(self.previous)
            staged.replace(self.current)
            _fsync_directory(self.directory)
        except OSError as exc:
            raise LinkError(
                f"cannot keep the installed package in {self.directory}: {exc.strerror}",
                "check that the state directory is writable and the disk is not full",
            ) from exc
        return True

    @staticmethod
    def discard(staged: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            staged.unlink()
