"""contrib/mender/ driven by Debian's mender-client 3.4 in standalone mode, against the virtual nRF52.

mender 3.4 looks for Update Modules only in /usr/share/mender/modules/v3 and reads
/etc/mender/artifact_info, whatever its configuration says. Each `mender` command therefore runs in its
own mount namespace (`unshare --mount`) with directories of the test bound over those two paths, and
`--config`, `--fallback-config` and `--data` point into the test's directory: nothing else is written.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import shared_fixture
from tests.engines import (
    CONTRIB,
    Gateway,
    LoggedProcess,
    gateway,
    key_a_application,
    require_root,
    require_tools,
)
from tests.simproc import CLI

pytestmark = pytest.mark.timeout(180)

MODULE = "nrf52-dfu"
DEVICE_TYPE = "nrf52-gateway"
# Bound over the fixed paths inside the namespace; "$@" is the mender command line.
_IN_NAMESPACE = (
    'mount --bind "$1" /usr/share/mender/modules/v3 && mount --bind "$2" /etc/mender && shift 2 && '
    'exec mender "$@"'
)


@dataclass
class Mender:
    """mender-client and mender-artifact confined to ``root``, calling our module with the gateway's env."""

    root: Path
    gateway: Gateway

    @classmethod
    def set_up(cls, root: Path, gw: Gateway) -> Mender:
        modules, etc, data = root / "modules", root / "etc", root / "data"
        for directory in (modules, etc, data):
            directory.mkdir(parents=True)
        shutil.copy2(CONTRIB / "mender" / MODULE, modules / MODULE)
        (etc / "artifact_info").write_text("artifact_name=factory\n")
        (data / "device_type").write_text(f"device_type={DEVICE_TYPE}\n")
        (root / "mender.conf").write_text("{}\n")
        return cls(root, gw)

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        command = [
            *("unshare", "--mount", "sh", "-c", _IN_NAMESPACE, "sh"),
            *(str(self.root / "modules"), str(self.root / "etc")),
            *("--config", str(self.root / "mender.conf"), "--fallback-config", str(self.root / "none.conf")),
            *("--data", str(self.root / "data"), "--no-syslog", "--log-level", "debug", *args),
        ]
        return subprocess.run(
            command, env=self.gateway.environment(), capture_output=True, text=True, timeout=150, check=False
        )

    def artifact(self, name: str, package: Path) -> Path:
        output = self.root / f"{name}.mender"
        subprocess.run(
            [
                *("mender-artifact", "write", "module-image", "-T", MODULE, "-t", DEVICE_TYPE),
                *("-n", name, "-f", str(package), "-o", str(output)),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return output

    def install(self, name: str, package: Path) -> subprocess.CompletedProcess[str]:
        return self("install", str(self.artifact(name, package)))

    def artifact_name(self) -> str:
        return self("show-artifact").stdout.strip()


def module_calls(log: str) -> list[str]:
    """The states mender called our module with, in order (from its debug log)."""
    marker = f"Calling module: /usr/share/mender/modules/v3/{MODULE} "
    return [line.split(marker, 1)[1].split()[0] for line in log.splitlines() if marker in line]


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    require_tools("mender", "mender-artifact", "unshare")
    require_root("mender reads /etc/mender and /usr/share/mender, bound over in a mount namespace")
    with gateway(tmp_path / "gateway") as running:
        yield running


@pytest.fixture
def mender(tmp_path: Path, gw: Gateway) -> Mender:
    return Mender.set_up(tmp_path / "mender", gw)


def test_install_and_commit_put_the_artifacts_package_on_the_nrf52(mender: Mender, gw: Gateway) -> None:
    package = shared_fixture("app_v2_signed.zip")

    installed = mender.install("nrf52-app-v2", package)
    assert installed.returncode == 0, installed.stderr
    assert module_calls(installed.stderr) == [
        "Download",
        "SupportsRollback",
        "ArtifactInstall",
        "NeedsArtifactReboot",
    ]
    assert gw.application_version() == 2
    committed = mender("commit")
    assert committed.returncode == 0, committed.stderr
    assert module_calls(committed.stderr) == ["ArtifactCommit", "Cleanup"]

    assert mender.artifact_name() == "nrf52-app-v2"
    assert (gw.state_dir / "packages" / "current.zip").read_bytes() == package.read_bytes()


def test_a_refused_package_is_rolled_back_and_fails_the_install(mender: Mender, gw: Gateway) -> None:
    assert mender.install("nrf52-app-v2", shared_fixture("app_v2_signed.zip")).returncode == 0
    assert mender("commit").returncode == 0

    # Built for SoftDevice 0xA8: the bootloader (SoftDevice 0xAF) refuses its init packet.
    refused = mender.install("nrf52-app-v3-wrong-sd", shared_fixture("app_v3_sdreq_A8_signed.zip"))

    assert refused.returncode != 0
    calls = module_calls(refused.stderr)
    assert calls[calls.index("ArtifactInstall") :] == [
        "ArtifactInstall",
        "SupportsRollback",
        "ArtifactRollback",
        "ArtifactFailure",
        "Cleanup",
    ]
    assert "rolling the nRF52 back to the package installed before" in refused.stderr
    assert gw.application_version() == 2
    assert mender.artifact_name() == "nrf52-app-v2"
    assert mender("commit").returncode == 2  # nothing left in progress


def test_a_failed_first_install_has_nothing_to_return_to(mender: Mender, gw: Gateway) -> None:
    refused = mender.install("nrf52-app-v3-wrong-sd", shared_fixture("app_v3_sdreq_A8_signed.zip"))

    assert refused.returncode != 0
    assert "ArtifactRollback" in module_calls(refused.stderr)
    assert "no package installed by mcu-updater before this artifact" in refused.stderr
    assert gw.application_version() is None
    # What runs is unknown, and Mender says so rather than name a state.
    assert mender.artifact_name() == "nrf52-app-v3-wrong-sd_INCONSISTENT"


def test_with_the_daemon_running_the_module_hands_it_the_job(
    mender: Mender, gw: Gateway, tmp_path: Path
) -> None:
    with LoggedProcess([*CLI, "run", "--config", str(gw.config)], gw.environment()) as daemon:
        assert "result=updated" in daemon.wait_for("update run finished")[-1]  # start-up: the shipped v2

        installed = mender.install("nrf52-app-v3", key_a_application(tmp_path / "app_v3.zip", 3))

        assert installed.returncode == 0, installed.stderr
        assert "result=updated" in daemon.wait_for("update run finished")[-1]  # the module's apply
        assert mender("commit").returncode == 0
    assert gw.application_version() == 3


def test_inventory_script_reports_what_apply_installed(mender: Mender, gw: Gateway) -> None:
    assert mender.install("nrf52-app-v2", shared_fixture("app_v2_signed.zip")).returncode == 0

    inventory = subprocess.run(
        [CONTRIB / "mender" / "mender-inventory-nrf52"],
        env=gw.environment(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    lines = inventory.stdout.splitlines()
    assert "nrf52_application_version=2" in lines
    assert "nrf52_softdevice_version=6001000" in lines
    assert all("=" in line and line.startswith("nrf52_") for line in lines)


def call_module(state: str, tree: Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """The module run directly, as mender runs it: ``nrf52-dfu STATE FILE_TREE``."""
    done = subprocess.run(
        [CONTRIB / "mender" / MODULE, state, str(tree)],
        env=env,
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return done.returncode, done.stdout, done.stderr


@pytest.mark.parametrize("state", ["ArtifactVerifyReboot", "ArtifactReboot", "SomeFutureState"])
def test_states_the_module_does_not_handle_print_nothing_and_succeed(tmp_path: Path, state: str) -> None:
    assert call_module(state, tmp_path) == (0, "", "")


def test_download_installs_nothing(tmp_path: Path) -> None:
    (tmp_path / "files").mkdir()
    shutil.copy2(shared_fixture("app_v2_signed.zip"), tmp_path / "files")
    # No mcu-updater on PATH: the module must not even try to run it.
    assert call_module("Download", tmp_path, env={"PATH": "/usr/bin:/bin"}) == (0, "", "")
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["app_v2_signed.zip", "files"]


def test_the_module_supports_rollback_and_needs_no_reboot(tmp_path: Path) -> None:
    assert call_module("SupportsRollback", tmp_path) == (0, "Yes\n", "")
    assert call_module("NeedsArtifactReboot", tmp_path) == (0, "No\n", "")
