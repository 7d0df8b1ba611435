"""The service unit: systemd's own checker says nothing, and its hardening scores SAFE (≤ 1.0)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "mcu-updater.service"
EXEC_START_BINARY = "/opt/mcu-updater/venv/bin/mcu-updater"
MAX_EXPOSURE = 1.0


def systemd_analyze(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing: the unit tests need it (Debian: apt install systemd)")
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, check=False)


def installable_copy(tmp_path: Path, extra: str = "") -> Path:
    """The unit with ExecStart pointing at a stand-in executable, since verify checks that it exists.

    Only that one path changes, so everything else verify looks at is the real unit.
    """
    binary = tmp_path / "venv" / "bin" / "mcu-updater"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    text = UNIT.read_text()
    assert text.count(f"ExecStart={EXEC_START_BINARY} ") == 1
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(f"ExecStart={EXEC_START_BINARY} ", f"ExecStart={binary} ") + extra)
    return copy


def test_verify_is_silent(tmp_path: Path) -> None:
    result = systemd_analyze("verify", str(installable_copy(tmp_path)))
    # verify exits 0 even for unknown keys and bad values: any output at all is a finding.
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")


def test_verify_would_notice_a_bad_key(tmp_path: Path) -> None:
    result = systemd_analyze("verify", str(installable_copy(tmp_path, extra="[Service]\nWatchdogSecs=5\n")))
    assert "Unknown key 'WatchdogSecs'" in result.stderr


def test_hardening_is_rated_safe(tmp_path: Path) -> None:
    unit = installable_copy(tmp_path)
    # --threshold compares on a x10 scale: the command itself fails above MAX_EXPOSURE.
    result = systemd_analyze("security", "--offline=true", f"--threshold={MAX_EXPOSURE * 10:.0f}", str(unit))
    match = re.search(r"Overall exposure level for mcu-updater\.service: (\d+\.\d+) (\w+)", result.stdout)
    assert match, result.stdout + result.stderr
    assert float(match[1]) <= MAX_EXPOSURE
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "setting",
    [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "RestartPreventExitStatus=78",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "StateDirectory=mcu-updater",
        "RuntimeDirectory=mcu-updater",
        "TimeoutStopSec=30s",
        "PrivateNetwork=yes",
        "RestrictAddressFamilies=AF_UNIX",
        "SupplementaryGroups=dialout gpio",
    ],
)
def test_unit_has(setting: str) -> None:
    lines = [line for line in UNIT.read_text().splitlines() if not line.startswith("#")]
    assert any(line.startswith(setting) for line in lines)
