"""contrib/adu/nrf52-dfu-adu called exactly as Azure Device Update's `microsoft/script:1` handler calls it.

The agent (through adu-shell) downloads the script and the payloads into the update's work folder and runs
``SCRIPT --action-X [handlerProperties.arguments] --work-folder DIR --result-file
DIR/action--action-X_aduc_result.json [--installed-criteria STR]``; it reads the result file only when the
script exits 0. Here the device is the virtual nRF52 on a pty.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mcu_updater.dfu.wire import ResultCode
from tests.conftest import shared_fixture
from tests.engines import CONTRIB, Gateway, gateway

pytestmark = pytest.mark.timeout(120)

SCRIPT = "nrf52-dfu-adu"
CUSTOM_HANDLER_ERC = 0x3200_0000  # ADU layout 0xFCCRRRRR: facility 3 (content handler), component 0x20
EXIT_DATA_ERROR = 65
EXIT_SOFTWARE = 70
EXIT_IO_ERROR = 74
SOFTDEVICE_MISMATCH = 0x07


@dataclass
class Workflow:
    """One update's work folder, as the agent prepares it, and the agent's way of running the script."""

    folder: Path
    gateway: Gateway
    installed_criteria: str = ""
    arguments: tuple[str, ...] = ()
    """handlerProperties.arguments, split on spaces by the agent."""

    @classmethod
    def prepare(cls, folder: Path, gw: Gateway, installed_criteria: str = "") -> Workflow:
        """A work folder holding the script, as the agent leaves it before the download."""
        folder.mkdir(parents=True)
        shutil.copy2(CONTRIB / "adu" / SCRIPT, folder / SCRIPT)
        return cls(folder, gw, installed_criteria)

    def download(self, package: str) -> None:
        shutil.copy2(shared_fixture(package), self.folder)

    def run(self, action: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        result_file = self.folder / f"action--action-{action}_aduc_result.json"
        command = [
            str(self.folder / SCRIPT),
            f"--action-{action}",
            *self.arguments,
            *("--work-folder", str(self.folder), "--result-file", str(result_file)),
        ]
        if self.installed_criteria:
            command += ["--installed-criteria", self.installed_criteria]
        done = subprocess.run(
            command,
            env=env if env is not None else self.gateway.environment(),
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
        assert done.returncode == 0, done.stderr  # else the agent ignores the result file
        assert "Traceback" not in done.stderr
        result: dict[str, Any] = json.loads(result_file.read_text())
        assert set(result) == {"resultCode", "extendedResultCode", "resultDetails"}
        return result


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    with gateway(tmp_path / "gateway") as running:
        yield running


@pytest.fixture
def workflow(tmp_path: Path, gw: Gateway) -> Workflow:
    return Workflow.prepare(tmp_path / "downloads" / "20261126t1431", gw, installed_criteria="application=2")


def codes(result: dict[str, Any]) -> tuple[int, int]:
    return result["resultCode"], result["extendedResultCode"]


def test_the_agents_sequence_installs_the_package(workflow: Workflow, gw: Gateway) -> None:
    # Before the payload is downloaded only the criteria can be checked: nothing installed yet.
    assert codes(workflow.run("is-installed")) == (901, 0)
    workflow.download("app_v2_signed.zip")

    assert codes(workflow.run("download")) == (500, 0)
    assert gw.application_version() is None  # a download sends nothing
    assert codes(workflow.run("install")) == (600, 0)
    assert gw.application_version() == 2
    assert codes(workflow.run("apply")) == (700, 0)

    assert codes(workflow.run("is-installed")) == (900, 0)
    (workflow.folder / "app_v2_signed.zip").unlink()  # the criteria alone now agree
    assert codes(workflow.run("is-installed")) == (900, 0)


def test_a_refused_package_fails_with_the_devices_codes(workflow: Workflow, gw: Gateway) -> None:
    workflow.download("app_v3_sdreq_A8_signed.zip")  # built for SoftDevice 0xA8; the device has 0xAF

    result = workflow.run("install")

    expected = CUSTOM_HANDLER_ERC | EXIT_DATA_ERROR << 12 | ResultCode.EXT_ERROR << 8 | SOFTDEVICE_MISMATCH
    assert codes(result) == (0, expected), result
    assert "SoftDevice" in result["resultDetails"]
    assert gw.application_version() is None
    assert codes(workflow.run("is-installed")) == (901, 0)


def test_a_package_the_configuration_refuses_is_reported_before_anything_is_sent(
    workflow: Workflow, gw: Gateway
) -> None:
    workflow.download("app_v3_hw51_signed.zip")  # for hw_version 51; the configuration says 52

    for action in ("download", "install"):
        result = workflow.run(action)
        assert codes(result) == (0, CUSTOM_HANDLER_ERC | EXIT_DATA_ERROR << 12), result
        assert "51" in result["resultDetails"]
    assert gw.application_version() is None


def test_a_missing_serial_port_fails_with_the_serial_exit_code(
    workflow: Workflow, gw: Gateway, tmp_path: Path
) -> None:
    workflow.download("app_v2_signed.zip")
    # Not the stopped simulator's pty: another process may be given its number at once.
    gw.config.write_text(gw.config.read_text().replace(gw.sim.port, str(tmp_path / "ttyGone")))
    # apply retries with backoff (about 15 s), then gives up.

    result = workflow.run("install")

    assert codes(result) == (0, CUSTOM_HANDLER_ERC | EXIT_IO_ERROR << 12), result
    assert "does not exist" in result["resultDetails"]


def test_install_without_a_package_says_so(workflow: Workflow) -> None:
    result = workflow.run("install")
    assert codes(result) == (0, CUSTOM_HANDLER_ERC | EXIT_SOFTWARE << 12)
    assert "no nrfutil .zip package" in result["resultDetails"]


def test_cancel_succeeds(workflow: Workflow) -> None:
    assert codes(workflow.run("cancel")) == (800, 0)


def test_handler_arguments_name_the_package_and_configuration(workflow: Workflow, gw: Gateway) -> None:
    workflow.download("app_v2_signed.zip")
    workflow.download("app_v3_sdreq_A8_signed.zip")
    workflow.arguments = ("--package", "app_v2_signed.zip", "--config", str(gw.config))
    env = gw.environment()
    del env["MCU_UPDATER_CONFIG"]

    assert codes(workflow.run("install", env)) == (600, 0)
    assert gw.application_version() == 2
