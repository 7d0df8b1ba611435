"""contrib/rauc/ with Debian's RAUC 1.8: a signed plain bundle installed through `rauc service`.

The service runs on a private D-Bus system bus (its own dbus-daemon, DBUS_SYSTEM_BUS_ADDRESS) in its
own mount namespace, with the `noop` bootloader, `--override-boot-slot`, two file-backed raw root
filesystem slots and its data, mount prefix and keyring in the test's directory. It mounts each bundle
(squashfs) on a loop device, so the test needs root.
"""

from __future__ import annotations

import shutil
import subprocess
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import shared_fixture
from tests.engines import CONTRIB, Gateway, LoggedProcess, Signer, gateway, require_root, require_tools

pytestmark = pytest.mark.timeout(180)

COMPATIBLE = "nrf52-gateway"  # as contrib/rauc/manifest.raucm says
SLOT_SIZE = 64 * 1024
_BUS_CONFIG = """\
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""


@dataclass
class Rauc:
    """Bundles built from contrib/rauc/ and installed with `rauc install` through the running service."""

    root: Path
    signer: Signer
    env: dict[str, str]

    def slot(self, bootname: str) -> Path:
        return self.root / f"rootfs-{bootname}.img"

    def bundle(self, package: str, rootfs: bytes) -> Path:
        content = self.root / f"{package}.d"
        content.mkdir()
        shutil.copy2(CONTRIB / "rauc" / "manifest.raucm", content)
        shutil.copy2(CONTRIB / "rauc" / "nrf52-hook", content)
        shutil.copy2(shared_fixture(package), content / "nrf52.zip")
        (content / "rootfs.ext4").write_bytes(rootfs)
        bundle = self.root / f"{package}.raucb"
        subprocess.run(
            [*("rauc", "bundle", "--cert", self.signer.cert, "--key", self.signer.key), content, bundle],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return bundle

    def install(self, bundle: Path) -> subprocess.CompletedProcess[str]:
        command = ["rauc", "install", str(bundle)]
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=150, check=False)


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[Gateway]:
    require_tools("rauc", "mksquashfs", "dbus-daemon", "unshare", "openssl")
    require_root("rauc mounts bundles on loop devices")
    with gateway(tmp_path / "gateway") as running:
        yield running


@contextmanager
def rauc_service(root: Path, gw: Gateway) -> Iterator[Rauc]:
    """A private system bus and `rauc service` on it, installing into two file-backed slots under ``root``."""
    (root / "mnt").mkdir(parents=True)
    signer = Signer.create(root)
    for bootname in "AB":
        (root / f"rootfs-{bootname}.img").write_bytes(bytes(SLOT_SIZE))
    system = root / "system.conf"
    system.write_text(
        textwrap.dedent(
            f"""\
            [system]
            compatible={COMPATIBLE}
            bootloader=noop
            mountprefix={root / "mnt"}
            data-directory={root / "data"}

            [keyring]
            path={signer.cert}

            [slot.rootfs.0]
            device={root / "rootfs-A.img"}
            type=raw
            bootname=A

            [slot.rootfs.1]
            device={root / "rootfs-B.img"}
            type=raw
            bootname=B
            """
        )
    )
    bus_config = root / "bus.conf"
    bus_config.write_text(_BUS_CONFIG.format(socket=root / "bus"))
    bus_command = ["dbus-daemon", "--config-file", str(bus_config), "--nofork", "--print-address"]
    with LoggedProcess(bus_command) as bus:
        address = bus.wait_for("unix:path=")[-1].strip()
        env = {**gw.environment(), "DBUS_SYSTEM_BUS_ADDRESS": address}
        service_command = ["rauc", "--debug", "--conf", str(system), "service", "--override-boot-slot=A"]
        with LoggedProcess(["unshare", "--mount", *service_command], env) as service:
            service.wait_for("name 'de.pengutronix.rauc' acquired")
            yield Rauc(root, signer, env)


@pytest.fixture
def rauc(tmp_path: Path, gw: Gateway) -> Iterator[Rauc]:
    with rauc_service(tmp_path / "rauc", gw) as service:
        yield service


def test_a_bundle_installs_its_image_and_the_package(rauc: Rauc, gw: Gateway) -> None:
    rootfs = b"root filesystem v2".ljust(4096, b"\0")

    done = rauc.install(rauc.bundle("app_v2_signed.zip", rootfs))

    assert done.returncode == 0, done.stdout + done.stderr
    assert gw.application_version() == 2
    assert rauc.slot("B").read_bytes()[: len(rootfs)] == rootfs  # written to the slot not booted


def test_a_package_the_device_refuses_fails_the_installation(rauc: Rauc, gw: Gateway) -> None:
    assert rauc.install(rauc.bundle("app_v2_signed.zip", b"v2")).returncode == 0

    # Built for SoftDevice 0xA8: the bootloader (SoftDevice 0xAF) refuses its init packet.
    done = rauc.install(rauc.bundle("app_v3_sdreq_A8_signed.zip", b"v3"))

    assert done.returncode != 0
    # apply's exit code 65: the package was refused.
    assert "failed to run slot hook: Child process exited with code 65" in done.stdout, done.stdout
    assert gw.application_version() == 2
