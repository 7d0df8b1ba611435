"""contrib/swupdate/ with Debian's SWUpdate 2022.12: a signed .swu pushed to the swupdate daemon.

Debian's build only installs signed images (sw-description signed with `openssl cms`, checked with
``-k cert.pem``) whose hardware-compatibility lists the revision given with ``-H board:rev``.
`swupdate-client` (and `swupdate -i`) sometimes exit with another update's status, so each update is
judged by the daemon's own log lines and by what the virtual nRF52 then runs. The daemon's sockets live
in its TMPDIR, here the test's directory.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import shared_fixture
from tests.engines import CONTRIB, Gateway, gateway, require_tools

pytestmark = pytest.mark.timeout(180)

BOARD = "nrf52-gateway"
REVISION = "1.0"
SUCCESS = "SWUPDATE successful"
FAILED = "SWUPDATE failed"
IDLE = "Waiting for requests"


@dataclass
class Signer:
    key: Path
    cert: Path


@pytest.fixture(scope="module")
def signer(tmp_path_factory: pytest.TempPathFactory) -> Signer:
    require_tools("openssl")
    directory = tmp_path_factory.mktemp("signer")
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-subj", "/CN=mcu-updater test", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return Signer(key, cert)


@dataclass
class SwupdateDaemon:
    """`swupdate` waiting for images on its control socket; its log lines are read as they come."""

    directory: Path
    gateway: Gateway
    signer: Signer
    process: subprocess.Popen[str] = field(init=False)
    lines: queue.Queue[str] = field(default_factory=queue.Queue, init=False)

    def __post_init__(self) -> None:
        self.tmp = self.directory / "tmp"
        self.tmp.mkdir(parents=True)
        config = self.directory / "swupdate.cfg"
        config.write_text("globals: { };\n")  # not /etc/swupdate.cfg, whatever the host has there
        self.env = {**self.gateway.environment(), "TMPDIR": str(self.tmp)}
        self.process = subprocess.Popen(
            [
                *("swupdate", "-v", "-f", str(config), "-k", str(self.signer.cert)),
                *("-H", f"{BOARD}:{REVISION}"),
            ],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its helper processes are stopped with it
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        self._wait_for_line("creating socket at " + str(self.tmp / "sockinstctrl"))

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def _wait_for_line(self, text: str, timeout: float = 60) -> list[str]:
        """Log lines up to the first containing ``text``."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while not seen or text not in seen[-1]:
            remaining = deadline - time.monotonic()
            try:
                seen.append(self.lines.get(timeout=max(remaining, 0)))
            except queue.Empty:
                logged = "\n".join(seen)
                raise AssertionError(f"swupdate never logged {text!r}; it logged:\n{logged}") from None
        return seen

    def install(self, image: Path) -> list[str]:
        """Push ``image`` with swupdate-client; the daemon's log lines of that update."""
        subprocess.run(
            ["swupdate-client", "-q", str(image)], env=self.env, capture_output=True, timeout=120, check=False
        )
        started = self._wait_for_line("Software Update started")
        return started[-1:] + self._wait_for_line(IDLE, timeout=120)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)
        self.reader.join(timeout=30)
        assert self.process.stdout is not None
        self.process.stdout.close()


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    require_tools("swupdate", "swupdate-client", "cpio", "openssl")
    with gateway(tmp_path / "gateway") as running:
        yield running


@pytest.fixture
def daemon(tmp_path: Path, gw: Gateway, signer: Signer) -> Iterator[SwupdateDaemon]:
    running = SwupdateDaemon(tmp_path / "swupdate", gw, signer)
    try:
        yield running
    finally:
        running.stop()


def make_swu(directory: Path, package: str, signer: Signer, *, revision: str = REVISION) -> tuple[Path, Path]:
    """The .swu contrib/swupdate/make-swu builds, and where it makes swupdate write the package."""
    image, destination = directory / f"{package}.swu", directory / "rootfs" / "nrf52" / "nrf52.zip"
    subprocess.run(
        [CONTRIB / "swupdate" / "make-swu", shared_fixture(package), signer.key, signer.cert, image],
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
