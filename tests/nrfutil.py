"""Nordic's nrfutil 6.1.7 as a reference peer: a Python 3.10 venv built once and cached outside the repo.

nrfutil 6.1.7 refuses Python >= 3.11, so the venv needs a 3.10 interpreter: ``$MCU_UPDATER_PYTHON310``,
``python3.10`` on PATH, or pyenv's 3.10.13. Missing interpreter or a failed install fails the test that
asked for nrfutil with the reason; it never skips silently.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path
from typing import Final

import pytest

VERSION: Final = "6.1.7"
# No connect delay; -t 2 is both nrfutil's USB-lister wait (never matches a pty) and its ping time.
DFU_SERIAL_FLAGS: Final = ("-fc", "0", "-cd", "0", "-t", "2")
CACHE: Final = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mcu-updater"
VENV: Final = CACHE / f"nrfutil-{VERSION}"


def _is_python310(interpreter: str) -> bool:
    probe = [interpreter, "-c", "import sys; sys.exit(sys.version_info[:2] != (3, 10))"]
    return subprocess.run(probe, capture_output=True, check=False).returncode == 0


def _python310() -> str:
    candidates = [
        os.environ.get("MCU_UPDATER_PYTHON310", ""),
        shutil.which("python3.10") or "",
        str(Path.home() / ".pyenv/versions/3.10.13/bin/python"),
    ]
    for candidate in candidates:
        # A pyenv shim named python3.10 exists even where that version is not selected, and fails.
        if candidate and Path(candidate).exists() and _is_python310(candidate):
            return candidate
    pytest.fail(
        "nrfutil 6.1.7 needs a Python 3.10 interpreter: set MCU_UPDATER_PYTHON310 or install python3.10"
    )


def nrfutil() -> Path:
    """Path of the nrfutil executable, building the cached venv first if needed (locked, so parallel
    test processes don't race)."""
    exe = VENV / "bin" / "nrfutil"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "nrfutil.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if exe.exists() and _works(exe):
            return exe
        shutil.rmtree(VENV, ignore_errors=True)
        steps = [
            [_python310(), "-m", "venv", str(VENV)],
            [str(VENV / "bin" / "pip"), "install", "--quiet", f"nrfutil=={VERSION}"],
        ]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, timeout=600, check=False)
            if done.returncode != 0:
                pytest.fail(f"building the nrfutil venv failed at {step[:3]}: {done.stderr[-2000:]}")
    if not _works(exe):
        pytest.fail(f"{exe} does not run after installation")
    return exe


def _works(exe: Path) -> bool:
    try:
        done = subprocess.run([str(exe), "version"], capture_output=True, text=True, timeout=60, check=False)
    except OSError:
        return False
    return done.returncode == 0 and VERSION in done.stdout


def run_nrfutil(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run nrfutil with ``args`` (output captured, never raising on failure)."""
    return subprocess.run(
        [str(nrfutil()), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def dfu_serial(package: Path, port: str, baud: int) -> subprocess.CompletedProcess[str]:
    """``nrfutil dfu serial``: upload ``package`` to the bootloader on ``port``."""
    return run_nrfutil("dfu", "serial", "-pkg", str(package), "-p", port, "-b", str(baud), *DFU_SERIAL_FLAGS)
