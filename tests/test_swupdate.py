"""contrib/swupdate/ with Debian's SWUpdate 2022.12: a signed .swu pushed to the swupdate daemon.

Debian's build only installs signed images (sw-description signed with `openssl cms`, checked with
``-k cert.pem``) whose hardware-compatibility lists the revision given with ``-H board:rev``.
`swupdate-client` (and `swupdate -i`) sometimes exit with another update's status, so each update is
judged by the daemon's own log lines and by what the virtual nRF52 then runs. The daemon's sockets live
in its TMPDIR, here the test's directory.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import shared_fixture
from tests.engines import (
    CONTRIB,
    Gateway,
    LoggedProcess,
    Signer,
    gateway,
    key_a_application,
    require_tools,
)
from tests.simproc import CLI

pytestmark = pytest.mark.timeout(180)

BOARD = "nrf52-gateway"
REVISION = "1.0"
SUCCESS = "SWUPDATE successful"
FAILED = "SWUPDATE failed"
IDLE = "Waiting for requests"


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Signer:
    return Signer.create(tmp_path_factory.mktemp("signer"))


class SwupdateDaemon(LoggedProcess):
    """`swupdate` waiting for images on its control socket, which lives in its TMPDIR."""

    def __init__(self, directory: Path, gw: Gateway, signer: Signer) -> None:
        tmp = directory / "tmp"
        tmp.mkdir(parents=True)
        config = directory / "swupdate.cfg"
        config.write_text("globals: { };\n")  # not /etc/swupdate.cfg, whatever the host has there
        self.env = {**gw.environment(), "TMPDIR": str(tmp)}
        super().__init__(
            ["swupdate", "-v", "-f", str(config), "-k", str(signer.cert), "-H", f"{BOARD}:{REVISION}"],
            self.env,
        )
        try:
            self._wait_until_listening(tmp / "sockinstctrl")
        except BaseException:
            self.stop()
            raise

    def _wait_until_listening(self, path: Path, timeout: float = 60) -> None:
        # swupdate logs "creating socket" before it listens; a client that connects earlier is refused.
        self.wait_for(f"creating socket at {path}", timeout)
        deadline = time.monotonic() + timeout
        while True:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(str(path))
                    return
                except (FileNotFoundError, ConnectionRefusedError):
                    if time.monotonic() > deadline:
                        raise
            time.sleep(0.01)

    def install(self, image: Path) -> list[str]:
        """Push ``image`` with swupdate-client; the daemon's log lines of that update."""
        subprocess.run(
            ["swupdate-client", "-q", str(image)], env=self.env, capture_output=True, timeout=120, check=False
        )
        started = self.wait_for("Software Update started")
        return started[-1:] + self.wait_for(IDLE, timeout=120)


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    require_tools("swupdate", "swupdate-client", "cpio", "openssl")
    with gateway(tmp_path / "gateway") as running:
        yield running


@pytest.fixture
def daemon(tmp_path: Path, gw: Gateway, signer: Signer) -> Iterator[SwupdateDaemon]:
    with SwupdateDaemon(tmp_path / "swupdate", gw, signer) as running:
        yield running


def make_swu(
    directory: Path,
    package: str | Path,
    signer: Signer,
    *,
    revision: str = REVISION,
    destination: Path | None = None,
) -> tuple[Path, Path]:
    """The .swu contrib/swupdate/make-swu builds for ``package`` (a shared fixture's name or a path), and
    where it makes swupdate write the package."""
    source = shared_fixture(package) if isinstance(package, str) else package
    image = directory / f"{source.name}.swu"
    destination = destination or directory / "rootfs" / "nrf52" / "nrf52.zip"
    subprocess.run(
        [CONTRIB / "swupdate" / "make-swu", source, signer.key, signer.cert, image],
        env={**os.environ, "SWU_HW_REVISION": revision, "NRF52_PACKAGE_PATH": str(destination)},
        check=True,
        capture_output=True,
        timeout=60,
    )
    return image, destination


def outcome(log: list[str]) -> str:
    """SUCCESS or FAILED, as the daemon logged the update's end."""
    ends = [marker for line in log for marker in (SUCCESS, FAILED) if marker in line]
    assert ends, "\n".join(log)
    return FAILED if FAILED in ends else SUCCESS


def test_a_signed_image_installs_the_package_on_the_nrf52(
    tmp_path: Path, daemon: SwupdateDaemon, gw: Gateway, signer: Signer
) -> None:
    image, destination = make_swu(tmp_path, "app_v2_signed.zip", signer)

    log = daemon.install(image)

    assert outcome(log) == SUCCESS, "\n".join(log)
    assert any("nrf52-apply.sh postinst" in line and "returned 0" in line for line in log)
    assert destination.read_bytes() == shared_fixture("app_v2_signed.zip").read_bytes()
    assert gw.application_version() == 2


def test_a_package_the_device_refuses_fails_the_update(
    tmp_path: Path, daemon: SwupdateDaemon, gw: Gateway, signer: Signer
) -> None:
    assert outcome(daemon.install(make_swu(tmp_path, "app_v2_signed.zip", signer)[0])) == SUCCESS

    # Built for SoftDevice 0xA8: the bootloader (SoftDevice 0xAF) refuses its init packet.
    log = daemon.install(make_swu(tmp_path, "app_v3_sdreq_A8_signed.zip", signer)[0])

    assert outcome(log) == FAILED
    assert any("postinst" in line and "returned 65" in line for line in log), "\n".join(log)
    assert gw.application_version() == 2


def test_an_image_for_another_hardware_revision_is_not_installed(
    tmp_path: Path, daemon: SwupdateDaemon, gw: Gateway, signer: Signer
) -> None:
    image, destination = make_swu(tmp_path, "app_v2_signed.zip", signer, revision="2.0")

    assert outcome(daemon.install(image)) == FAILED
    assert not destination.exists()
    assert gw.application_version() is None


def test_with_the_daemon_running_an_image_writing_into_its_firmware_directory_stays_installed(
    tmp_path: Path, signer: Signer
) -> None:
    require_tools("swupdate", "swupdate-client", "cpio", "openssl")
    firmware_dir = tmp_path / "firmware"
    firmware_dir.mkdir()
    shutil.copy2(shared_fixture("app_v2_signed.zip"), firmware_dir / "nrf52.zip")
    with (
        gateway(tmp_path / "gateway", firmware=firmware_dir) as gw,
        LoggedProcess([*CLI, "run", "--config", str(gw.config)], gw.environment()) as mcu_updater,
        SwupdateDaemon(tmp_path / "swupdate", gw, signer) as daemon,
    ):
        assert "result=updated" in mcu_updater.wait_for("update run finished")[-1]  # start-up: v2
        image, _ = make_swu(
            tmp_path,
            key_a_application(tmp_path / "app_v3.zip", 3),
            signer,
            destination=firmware_dir / "nrf52.zip",
        )

        assert outcome(daemon.install(image)) == SUCCESS

        # The postinst's apply (handed to the daemon) and the reconcile the new file starts, in either order.
        results = [mcu_updater.wait_for("update run finished")[-1].split("result=")[1] for _ in range(2)]
        assert sorted(result.split()[0] for result in results) == ["up-to-date", "updated"]
        assert gw.application_version() == 3
