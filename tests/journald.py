"""A real systemd-journald in its own namespace, so log tests see what journalctl will show operators."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

JOURNALD = Path("/lib/systemd/systemd-journald")
START_TIMEOUT = 5.0
QUERY_TIMEOUT = 5.0


@dataclass(frozen=True)
class JournalNamespace:
    name: str
    socket: Path
    """The native-protocol socket, ``/run/systemd/journal.NAME/socket``."""

    @property
    def stream_socket(self) -> Path:
        """Where services' stdout/stderr go (what systemd connects a unit's stderr to)."""
        return self.socket.with_name("stdout")

    def query(self, *matches: str, count: int = 1) -> list[dict[str, Any]]:
        """Entries matching ``FIELD=value`` terms, waiting until at least ``count`` have landed."""
        deadline = time.monotonic() + QUERY_TIMEOUT
        while True:
            result = subprocess.run(
                ["journalctl", f"--namespace={self.name}", "--no-pager", "--all", "-o", "json", *matches],
                capture_output=True,
                text=True,
                check=False,
            )
            entries = [json.loads(line) for line in result.stdout.splitlines()]
            if len(entries) >= count or time.monotonic() > deadline:
                return entries
            time.sleep(0.05)


def _journal_dirs(name: str) -> list[Path]:
    machine_id = Path("/etc/machine-id").read_text().strip()
    # Persistent storage when /var/log/journal exists, volatile under /run otherwise.
    return [
        Path(f"/var/log/journal/{machine_id}.{name}"),
        Path(f"/run/log/journal/{machine_id}.{name}"),
        Path(f"/run/systemd/journal.{name}"),
    ]


@pytest.fixture
def journald() -> Iterator[JournalNamespace]:
    """Start ``systemd-journald NAME`` for one test, and remove it and its journal afterwards."""
    if not JOURNALD.is_file():
        pytest.fail(
            f"{JOURNALD} is missing: the logging tests need a real journald (Debian: apt install systemd)"
        )
    name = f"mcutest{uuid.uuid4().hex[:12]}"
    namespace = JournalNamespace(name, Path(f"/run/systemd/journal.{name}/socket"))
    process = subprocess.Popen(
        [str(JOURNALD), name], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not (namespace.socket.exists() and namespace.stream_socket.exists()):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                _, stderr = process.communicate()
                pytest.fail(f"systemd-journald {name} did not start (exit {process.returncode}): {stderr}")
            time.sleep(0.02)
        yield namespace
    finally:
        process.terminate()
        try:
            process.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
        for directory in _journal_dirs(name):
            shutil.rmtree(directory, ignore_errors=True)
