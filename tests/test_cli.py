"""`mcu-updater flash` as users run it: a child process on a real pty, exit codes, output modes."""

from __future__ import annotations

import io
import json
import os
import re
import tty
from pathlib import Path

import pytest

from mcu_updater.console import Renderer
from mcu_updater.dfu.transfer import Progress
from mcu_updater.updater import ImageProgress
from tests.conftest import shared_fixture
from tests.simproc import FAST_BAUD, SimulatorProcess, run_cli

pytestmark = pytest.mark.timeout(120)


def _bytes_in(summary: str) -> int:
    match = re.search(r"summary: (\d+) bytes in", summary)
    assert match, summary
    return int(match.group(1))


@pytest.fixture
def sim(tmp_path: Path) -> SimulatorProcess:
    return SimulatorProcess(tmp_path / "state.json", "--public-key", str(shared_fixture("key_a_public.pem")))


def flash(sim: SimulatorProcess, package: str | Path, *extra: str) -> tuple[int, str, str]:
    path = package if isinstance(package, Path) else shared_fixture(package)
    result = run_cli("flash", str(path), "--port", sim.port, "--baud", str(FAST_BAUD), *extra)
    assert "Traceback" not in result.stderr
    return result.exit_code, result.stdout, result.stderr


def test_plain_output_shows_plan_progress_and_summary(sim: SimulatorProcess) -> None:
    with sim:
        code, out, err = flash(
            sim, "app_v2_signed.zip", "--public-key", str(shared_fixture("key_a_public.pem"))
        )
        again, out_again, _ = flash(sim, "app_v2_signed.zip")
        sim.stop()
    assert (code, err) == (0, "")
    assert "install application v2 (61440 B): not on the device" in out
    assert len(re.findall(r"^  +\d+% [\d.]+ KiB/60.0 KiB [\d.]+ KiB/s ETA", out, re.MULTILINE)) >= 8
    assert "100% 60.0 KiB/60.0 KiB" in out
    assert re.search(r"done: application \(61440 B\) in [\d.]+ s, [\d.]+ KiB/s overall", out)
    assert "\r" not in out, "no progress bar when stdout is not a terminal"
    assert again == 0
    assert "nothing to do: every image is already installed" in out_again


def test_json_events(sim: SimulatorProcess) -> None:
    with sim:
        code, out, _ = flash(sim, "sd_app_signed.zip", "--json")
        sim.stop()
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[:3] == ["connected", "inventory", "plan"]
    assert kinds.count("image_sent") == 2
    assert "activated" in kinds
    plan = events[2]["images"]
    assert [(i["name"], i["action"]) for i in plan] == [("softdevice", "update"), ("application", "install")]
    last = events[-1]
    assert last["result"] == "success"
    assert last["sent"] == ["softdevice", "application"]
    assert last["firmware_bytes"] == 36864 + 61440
    progress = [e for e in events if e["event"] == "progress"]
    assert {"offset", "total", "bytes_per_s", "eta_s", "objects_done", "objects_total"} <= set(progress[-1])


def test_invalid_package_sends_nothing(sim: SimulatorProcess) -> None:
    with sim:
        code, out, err = flash(
            sim, "app_v2_unsigned.zip", "--public-key", str(shared_fixture("key_a_public.pem")), "--json"
        )
        summary = sim.stop()
    assert code == 65
    assert len(err.strip().splitlines()) == 1
    assert "unsigned" in err
    assert '"result": "failed"' in out
    assert _bytes_in(summary) == 0


def test_hw_version_mismatch_is_refused_before_sending(sim: SimulatorProcess) -> None:
    with sim:
        code, _, err = flash(sim, "app_v3_hw51_signed.zip", "--hw-version", "52")
        summary = sim.stop()
    assert code == 65
    assert "--hw-version 52" in err
    assert _bytes_in(summary) == 0


@pytest.mark.parametrize(
    ("args", "code", "phrase"),
    [
        (["flash", "x.zip"], 64, "--port"),
        (["flash", "x.zip", "--port", "/dev/null", "--prn", "70000"], 64, "--prn"),
        (["flash", "--port", "/dev/null"], 64, "package"),
        (["frobnicate"], 64, "invalid choice"),
        (["flash", "/nonexistent/app.zip", "--port", "/dev/null"], 66, "/nonexistent/app.zip"),
    ],
)
def test_usage_and_missing_input(args: list[str], code: int, phrase: str) -> None:
    result = run_cli(*args)
    assert result.exit_code == code
    assert phrase in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def test_missing_port_is_an_io_error() -> None:
    result = run_cli("flash", str(shared_fixture("app_v2_signed.zip")), "--port", "/dev/ttyNOPE7")
    assert result.exit_code == 74
    assert "serial port /dev/ttyNOPE7 does not exist" in result.stderr


def test_silent_port_means_target_not_answering() -> None:
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    try:
        result = run_cli(
            "flash",
            str(shared_fixture("app_v2_signed.zip")),
            "--port",
            os.ttyname(slave),
            "--ready-timeout",
            "1",
        )
    finally:
        os.close(slave)
        os.close(master)
    assert result.exit_code == 69
    assert "did not answer a ping" in result.stderr
    assert "bootloader" in result.stderr


def test_progress_bar_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    renderer = Renderer(json_lines=False, stream=screen)
    for offset in (0, 30720, 61440):
        renderer.emit(
            ImageProgress(Progress("application", "data", offset, 61440, offset // 4096, 15, 2.0, 0, 0))
        )
    text = screen.getvalue()
    assert text.count("\r  [") == 3
    assert "[##############..............]  50%" in text
    assert "\n" not in text, "the bar redraws one line"
