"""`mcu-updater apply`, `verify` and `status --json` as an OTA engine runs them: real processes, the
virtual nRF52 on a real pty, no daemon (the standalone path, under the run lock)."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from mcu_updater.state import PackageStore
from tests.conftest import shared_fixture
from tests.simproc import CLI, FAST_BAUD, DaemonProcess, SimulatorProcess, run_cli
from tests.test_service import wait_for, write_config

pytestmark = pytest.mark.timeout(120)

DENY_DOWNGRADES = "policy: {downgrade: deny}\n"
RESULT_TYPES: dict[str, type | tuple[type, ...]] = {
    "ok": bool,
    "exit_code": int,
    "message": str,
    "hint": str,
    "device_result": (int, type(None)),
    "device_extended_error": (int, type(None)),
    "installed": dict,
}


def signed_sim(tmp_path: Path, *extra: str) -> SimulatorProcess:
    return SimulatorProcess(
        tmp_path / "nrf52.json", "--public-key", str(shared_fixture("key_a_public.pem")), *extra
    )


def job(command: str, config: Path, package: str, *options: str) -> list[dict[str, Any]]:
    """Run ``command`` with --json; check the NDJSON shape and return its records (result last)."""
    done = run_cli(
        command, "--package", str(shared_fixture(package)), "--config", str(config), "--json", *options
    )
    lines = done.stdout.splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == len(lines), "every stdout line is one JSON object"
    assert all(isinstance(r.get("event"), str) for r in records)
    result = records[-1]
    assert result["event"] == "result"
    assert [r["event"] for r in records].count("result") == 1
    for key, kind in RESULT_TYPES.items():
        assert isinstance(result[key], kind), (key, result)
    assert all(isinstance(v, int) for v in result["installed"].values())
    assert result["ok"] is (result["exit_code"] == 0)
    assert done.exit_code == result["exit_code"], done.stderr
    if done.exit_code == 0:
        assert done.stderr == ""
    else:
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "Traceback" not in done.stderr
    return records


def test_apply_installs_then_finds_it_installed_and_verify_agrees(tmp_path: Path) -> None:
    with signed_sim(tmp_path) as sim:
        config = write_config(tmp_path, sim.port)
        first = job("apply", config, "app_v2_signed.zip")
        kinds = [r["event"] for r in first]
        assert kinds[:3] == ["connected", "inventory", "plan"]
        assert {"image_started", "progress", "image_sent", "finished"} <= set(kinds)
        result = first[-1]
        assert result["ok"] is True
        assert result["sent"] == ["application"]
        assert result["installed"]["application"] == 2
        assert result["device_result"] is None
        assert result["bytes_sent"] >= 61440

        again = job("apply", config, "app_v2_signed.zip")[-1]
        assert again["exit_code"] == 0
        assert again["result"] == "up-to-date"
        assert again["sent"] == []

        verified = job("verify", config, "app_v2_signed.zip")[-1]
        assert verified["exit_code"] == 0
        assert "application v2" in verified["message"]

        human = run_cli(
            "verify", "--package", str(shared_fixture("app_v2_signed.zip")), "--config", str(config)
        )
        assert human.exit_code == 0
        assert "the device runs exactly application v2" in human.stdout

        status = json.loads(run_cli("status", "--json", "--config", str(config)).stdout)
        summary = sim.stop()
    assert summary.count("image: application v2") == 1, "the second apply sent nothing"
    assert status["installed"]["application"] == 2
    assert status["last_run"]["result"] == "up-to-date"
    assert status["last_run"]["package"] == str(shared_fixture("app_v2_signed.zip"))
    assert status["daemon"]["running"] is False
    store = PackageStore(tmp_path / "state")
    assert status["packages"] == {"current": str(store.current), "previous": None}
    assert store.current.read_bytes() == shared_fixture("app_v2_signed.zip").read_bytes()
    assert stat.S_IMODE(store.current.stat().st_mode) == 0o600
    assert sorted(p.name for p in store.directory.iterdir()) == ["current.zip"], "no staged copy left"


def test_verify_names_what_differs_and_exits_1(tmp_path: Path) -> None:
    with signed_sim(tmp_path) as sim:
        config = write_config(tmp_path, sim.port)
        result = job("verify", config, "sd_app_signed.zip")[-1]
        human = run_cli(
            "verify", "--package", str(shared_fixture("sd_app_signed.zip")), "--config", str(config)
        )
    assert result["exit_code"] == 1
    assert result["differences"] == [
        "softdevice: the device runs version 6001000, the package has 6001001",
        "application: not on the device, the package has version 3",
    ]
    assert human.exit_code == 1
    assert human.stderr.count("\n") == 1
    assert "softdevice: the device runs version 6001000, the package has 6001001" in human.stderr


def test_dry_run_plans_and_sends_nothing(tmp_path: Path) -> None:
    with signed_sim(tmp_path) as sim:
        config = write_config(tmp_path, sim.port)
        records = job("apply", config, "sd_app_signed.zip", "--dry-run")
        summary = sim.stop()
    plan = next(r for r in records if r["event"] == "plan")
    assert [(i["name"], i["action"]) for i in plan["images"]] == [
        ("softdevice", "update"),
        ("application", "install"),
    ]
    assert records[-1]["would_send"] == ["softdevice", "application"]
    assert "image_started" not in [r["event"] for r in records]
    assert "image: none received" in summary
    assert not PackageStore(tmp_path / "state").current.exists()


def test_device_refusal_carries_its_result_and_extended_error(tmp_path: Path) -> None:
    with signed_sim(tmp_path) as sim:
        config = write_config(tmp_path, sim.port)
        result = job("apply", config, "app_v3_sdreq_A8_signed.zip")[-1]
    assert result["exit_code"] == 65
    assert (result["device_result"], result["device_extended_error"]) == (0x0B, 0x07)
    assert "--sd-req 0xAF" in result["hint"]
    assert not PackageStore(tmp_path / "state").current.exists(), "a failed package is not kept"


def test_downgrade_policy_override_and_package_rotation(tmp_path: Path) -> None:
    # The Azure sample's bootloader takes any version but the installed one, so a rollback can happen.
    with SimulatorProcess(tmp_path / "nrf52.json", "--profile", "azure-sample") as sim:
        config = write_config(tmp_path, sim.port, DENY_DOWNGRADES)
        store = PackageStore(tmp_path / "state")
        v2 = shared_fixture("app_v2_signed.zip").read_bytes()
        v1 = shared_fixture("app_v1_signed_downgrade.zip").read_bytes()
        assert job("apply", config, "app_v2_signed.zip")[-1]["exit_code"] == 0

        denied = job("apply", config, "app_v1_signed_downgrade.zip")[-1]
        assert denied["exit_code"] == 65
        assert "downgrade policy is deny" in denied["message"]
        assert denied["device_result"] is None, "refused by our policy before anything was sent"
        assert store.current.read_bytes() == v2

        rolled_back = job("apply", config, "app_v1_signed_downgrade.zip", "--allow-downgrade")[-1]
        assert rolled_back["exit_code"] == 0
        assert rolled_back["installed"]["application"] == 1
        assert (store.current.read_bytes(), store.previous.read_bytes()) == (v1, v2)

        # An engine's rollback re-applies previous.zip from the state directory itself.
        done = run_cli("apply", "--package", str(store.previous), "--config", str(config))
        assert done.exit_code == 0, done.stderr
        assert (store.current.read_bytes(), store.previous.read_bytes()) == (v2, v1)
        assert stat.S_IMODE(store.previous.stat().st_mode) == 0o600
        assert job("verify", config, "app_v2_signed.zip")[-1]["exit_code"] == 0


@pytest.mark.parametrize(
    ("arguments", "exit_code", "message"),
    [
        (["--package", "missing.zip"], 66, "does not exist"),
        (["--package", "app.bin"], 64, "is not a .zip package"),
        (["--package", "{fixtures}/app_v2_unsigned.zip"], 65, "is unsigned"),
        (["--package", "{fixtures}/app_v3_hw51_signed.zip"], 65, "hw_version"),
    ],
)
def test_bad_input_exits_with_its_code_and_one_line(
    tmp_path: Path, arguments: list[str], exit_code: int, message: str
) -> None:
    config = write_config(tmp_path, "/dev/nonexistent-port")
    fixtures = str(shared_fixture("README.md").parent)
    filled = [a.format(fixtures=fixtures) for a in arguments]
    done = run_cli("apply", *filled, "--config", str(config), "--json")
    assert done.exit_code == exit_code, done.stderr
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    result = json.loads(done.stdout.splitlines()[-1])
    assert (result["event"], result["ok"], result["exit_code"]) == ("result", False, exit_code)


def test_bad_config_exits_78(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("serial: {port: /dev/ttyAMA0}\n")
    done = run_cli("verify", "--package", str(shared_fixture("app_v2_signed.zip")), "--config", str(bad))
    assert done.exit_code == 78
    assert "bad.yaml" in done.stderr
    assert "firmware" in done.stderr


def test_second_apply_waits_for_the_run_lock(tmp_path: Path) -> None:
    with signed_sim(tmp_path) as sim:
        config = write_config(tmp_path, sim.port)
        (tmp_path / "run").mkdir()
        holder = os.open(tmp_path / "run" / "run.lock", os.O_RDONLY | os.O_CREAT, 0o644)
        fcntl.flock(holder, fcntl.LOCK_EX)
        waiting = subprocess.Popen(
            [
                *CLI,
                "apply",
                "--package",
                str(shared_fixture("app_v2_signed.zip")),
                "--config",
                str(config),
                "--json",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert waiting.stdout is not None
            first = json.loads(waiting.stdout.readline())
            assert first["event"] == "waiting"
            assert "another mcu-updater run holds" in first["message"]
            assert sim.process.poll() is None
            os.close(holder)  # the other run ends: the waiting apply goes ahead
            out, err = waiting.communicate(timeout=60)
        finally:
            if waiting.poll() is None:
                waiting.kill()
                waiting.communicate()
        result = json.loads(out.splitlines()[-1])
        summary = sim.stop()
    assert waiting.returncode == 0, err
    assert result["sent"] == ["application"]
    assert "image: application v2" in summary


def test_jobs_are_handed_to_a_running_daemon(tmp_path: Path) -> None:
    with signed_sim(tmp_path) as sim:
        config = write_config(tmp_path, sim.port, DENY_DOWNGRADES)
        with DaemonProcess(config, tmp_path / "notify") as daemon:
            daemon.wait_ready()  # its start-up run installed the configured app_v2
            updated = job("apply", config, "sd_app_signed.zip")
            assert updated[0] == {"event": "accepted", "kind": "apply", "queued": False}
            assert updated[-1]["sent"] == ["softdevice", "application"]
            assert updated[-1]["installed"] == {"bootloader": 1, "softdevice": 6001001, "application": 3}

            verified = job("verify", config, "sd_app_signed.zip")
            assert verified[0]["event"] == "accepted"
            assert verified[-1]["exit_code"] == 0

            denied = job("apply", config, "app_v2_signed.zip")[-1]
            assert denied["exit_code"] == 65
            assert "downgrade policy is deny" in denied["message"]

            status = json.loads(run_cli("status", "--json", "--config", str(config)).stdout)
            err = daemon.stop()
        summary = sim.stop()
    assert status["daemon"]["running"] is True
    assert status["last_run"]["package"] == str(shared_fixture("app_v2_signed.zip"))
    assert status["packages"]["current"] is not None
    assert (
        PackageStore(tmp_path / "state").current.read_bytes()
        == shared_fixture("sd_app_signed.zip").read_bytes()
    )
    assert "apply job received" in err
    assert "image: softdevice" in summary


def test_firmware_applied_keeps_the_nrf52_at_the_last_applied_package(tmp_path: Path) -> None:
    # The azure-sample bootloader takes older versions, so someone can flash one behind our back.
    with signed_sim(tmp_path, "--profile", "azure-sample") as sim:
        config = write_config(tmp_path, sim.port, firmware="applied")
        with DaemonProcess(config, tmp_path / "notify") as daemon:
            daemon.wait_ready()
            assert daemon.last_run()["result"] == "nothing-applied"
            assert job("apply", config, "app_v2_signed.zip")[-1]["sent"] == ["application"]

            older = run_cli("flash", str(shared_fixture("app_v1_signed_downgrade.zip")), "--port", sim.port)
            assert older.exit_code == 0, older.stderr
            assert run_cli("trigger", "--config", str(config)).exit_code == 0
            wait_for(lambda: daemon.last_run()["package"] == "", "the triggered run")
            reconciled = daemon.last_run()
            daemon.stop()
        summary = sim.stop()
    assert (reconciled["result"], reconciled["sent"]) == ("updated", ["application"])
    assert summary.count("image: application v2") == 2, summary


def test_a_stale_socket_falls_back_to_standalone(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(tmp_path / "run" / "control.sock"))  # bound, never listening: a crashed daemon's
    stale.close()
    with signed_sim(tmp_path) as sim:
        config = write_config(tmp_path, sim.port)
        records = job("apply", config, "app_v2_signed.zip")
    assert "accepted" not in [r["event"] for r in records]
    assert records[-1]["sent"] == ["application"]


def test_sigterm_cuts_a_standalone_apply_cleanly(tmp_path: Path) -> None:
    # At 115200 baud the 60 KiB application takes seconds on the line: SIGTERM lands inside it.
    with SimulatorProcess(
        tmp_path / "nrf52.json", "--public-key", str(shared_fixture("key_a_public.pem")), baud=115200
    ) as sim:
        config = write_config(tmp_path, sim.port)
        config.write_text(config.read_text().replace(f"baud: {FAST_BAUD}", "baud: 115200"))
        package = str(shared_fixture("app_v2_signed.zip"))
        applying = subprocess.Popen(
            [*CLI, "apply", "--package", package, "--config", str(config), "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            assert applying.stdout is not None
            while json.loads(applying.stdout.readline())["event"] != "progress":
                pass
            applying.send_signal(signal.SIGTERM)
            out, err = applying.communicate(timeout=30)
        finally:
            if applying.poll() is None:
                applying.kill()
                applying.communicate()
        resumed = job("apply", config, "app_v2_signed.zip")[-1]
    result = json.loads(out.splitlines()[-1])
    assert applying.returncode == 75, err
    assert (result["event"], result["exit_code"]) == ("result", 75)
    assert "stopped by a signal" in result["message"]
    assert err.count("\n") == 1
    assert resumed["sent"] == ["application"]
    status = json.loads(run_cli("status", "--json", "--config", str(config)).stdout)
    assert status["runs"] == 2
