"""`mcu-updater run`, `trigger`, `status`, `check-config` and `demo` as an operator uses them: real
processes, a real pty to `mcu-updater simulate`, a real sd_notify socket."""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import shared_fixture
from tests.simproc import FAST_BAUD, DaemonProcess, SimulatorProcess, run_cli

pytestmark = pytest.mark.timeout(120)


def write_config(folder: Path, port: str, extra: str = "", firmware: str | None = None) -> Path:
    """A gateway configuration on ``port`` without lines; ``extra`` adds top-level sections;
    ``firmware`` replaces the shipped app_v2 package."""
    path = folder / "mcu-updater.yaml"
    path.write_text(
        textwrap.dedent(
            f"""\
            serial:
              port: {port}
              baud: {FAST_BAUD}
            gpio:
              backend: none
            target:
              hw_version: 52
              public_key: {shared_fixture("key_a_public.pem")}
            firmware: {firmware or shared_fixture("app_v2_signed.zip")}
            state_dir: {folder / "state"}
            runtime_dir: {folder / "run"}
            """
        )
        + textwrap.dedent(extra)
    )
    return path


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_daemon_process_reconciles_answers_trigger_and_status_and_stops(tmp_path: Path) -> None:
    with SimulatorProcess(
        tmp_path / "nrf52.json", "--public-key", str(shared_fixture("key_a_public.pem"))
    ) as sim:
        config = write_config(tmp_path, sim.port)
        with DaemonProcess(config, tmp_path / "notify") as daemon:
            daemon.wait_ready()
            assert any(m.startswith("STATUS=updating application") for m in daemon.messages)

            status = run_cli("status", "--json", "--config", str(config))
            assert status.exit_code == 0, status.stderr
            report = json.loads(status.stdout)
            assert report["daemon"]["running"] is True
            assert report["last_run"]["result"] == "updated"
            assert report["last_run"]["finished"].startswith("20")
            assert {"type": "application", "version": 2} in [
                {k: e[k] for k in ("type", "version")} for e in report["inventory"]
            ]

            trigger = run_cli("trigger", "--config", str(config))
            assert trigger.exit_code == 0, trigger.stderr
            wait_for(
                lambda: (
                    json.loads(run_cli("status", "--json", "--config", str(config)).stdout)["last_run"][
                        "result"
                    ]
                    == "up-to-date"
                ),
                "the triggered run",
            )
            human = run_cli("status", "--config", str(config))
            assert "last run: up-to-date" in human.stdout
            assert "application 2" in human.stdout
            err = daemon.stop()
        assert "update run finished" in err
        summary = sim.stop()
    assert "image: application v2" in summary
    stopped = run_cli("status", "--config", str(config))
    assert "daemon: not running" in stopped.stdout
    assert run_cli("trigger", "--config", str(config)).exit_code == 69


def test_check_config(tmp_path: Path) -> None:
    good = write_config(tmp_path, "/dev/ttyAMA0")
    ok = run_cli("check-config", str(good))
    assert ok.exit_code == 0
    assert "OK" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("backend: none", "backend: gpiodd"))
    refused = run_cli("check-config", str(bad))
    assert refused.exit_code == 78
    assert "bad.yaml:5: gpio.backend" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_run_with_a_bad_config_exits_78(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("serial: {port: /dev/ttyAMA0}\n")
    result = run_cli("run", "--config", str(bad))
    assert result.exit_code == 78
    assert "firmware" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo(tmp_path: Path) -> None:
    started = time.monotonic()
    result = run_cli("demo", timeout=60)
    assert result.exit_code == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "demo succeeded: first run updated, after the button up-to-date" in result.stdout
    assert "image: softdevice v6001001" in result.stdout
    assert "image: application v1" in result.stdout
    assert time.monotonic() - started < 60
