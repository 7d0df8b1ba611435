"""contrib/install.sh for real: run inside a Debian bookworm root (debootstrap minbase, chrooted, with its
own python3-venv; mcu-updater as a wheel built from this tree, its dependencies from PyPI), then re-run,
upgraded, uninstalled; and once more from outside with --root and the source tree, as an image builder
runs it.

The tests of this module share one installed root and run in order: each starts from where the previous
one left it (installed → re-run → edited → upgraded → uninstalled).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import pytest

from tests.conftest import shared_fixture
from tests.debian_root import BASE_ENV, in_root, unpack_debian_root
from tests.nrfutil import CACHE

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

REPO: Final = Path(__file__).resolve().parents[1]
SOURCE_INSIDE: Final = "/tmp/mcu-updater-source"
PIP_CACHE_INSIDE: Final = "/var/cache/mcu-updater-pip"
HOST_CA_INSIDE: Final = "/etc/ssl/certs/host-ca.crt"

VENV_EXE: Final = "/opt/mcu-updater/venv/bin/mcu-updater"
CONFIG: Final = "/etc/mcu-updater/mcu-updater.yaml"
UNIT: Final = "/etc/systemd/system/mcu-updater.service"
WANTS: Final = "/etc/systemd/system/multi-user.target.wants/mcu-updater.service"
RULES: Final = "/etc/udev/rules.d/99-mcu-updater.rules"
FIRMWARE: Final = "/usr/share/mcu-updater/firmware"
LINK: Final = "/usr/local/bin/mcu-updater"
STAMP: Final = "/opt/mcu-updater/venv/.installed-from"
# Where an installation can leave a trace: compared before and after a re-run.
WATCHED: Final = ("etc", "opt", "usr/local", "usr/share/mcu-updater", "var/lib")


def host_ca_bundle() -> Path | None:
    """The CA bundle the host's pip trusts, if it names one (a TLS-inspecting proxy's CA, say)."""
    for name in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"):
        bundle = os.environ.get(name, "")
        if bundle and Path(bundle).is_file():
            return Path(bundle)
    return None


def pip_env() -> dict[str, str]:
    """pip inside the root trusts what the host's pip trusts and uses the same index and proxies; wheels
    are cached across runs."""
    env = {"PIP_CACHE_DIR": PIP_CACHE_INSIDE, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    if host_ca_bundle() is not None:
        env["PIP_CERT"] = HOST_CA_INSIDE
    passed = ("PIP_INDEX_URL", "PIP_DEFAULT_TIMEOUT", "HTTPS_PROXY", "https_proxy", "NO_PROXY", "no_proxy")
    return env | {name: os.environ[name] for name in passed if name in os.environ}


@dataclass
class Gateway:
    """A Debian root with this tree's installer files and wheel copied in."""

    root: Path
    wheel: str
    """The wheel's path inside the root."""
    first_install: list[str] = field(default_factory=list)

    def path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")

    def run(self, *command: str) -> subprocess.CompletedProcess[str]:
        pip_cache = CACHE / "pip-debian"
        pip_cache.mkdir(parents=True, exist_ok=True)
        return in_root(self.root, list(command), binds={pip_cache: PIP_CACHE_INSIDE}, env=pip_env())

    def install(self, *options: str) -> list[str]:
        """The installer's lines; fails the test on a non-zero exit."""
        done = self.run("sh", f"{SOURCE_INSIDE}/contrib/install.sh", *options)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stderr == "", done.stderr
        return done.stdout.splitlines()


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (built,) = out.glob("mcu_updater-*.whl")
    return built


def fresh_root(directory: Path) -> Path:
    """A new copy of the Debian root whose pip trusts what the host's does."""
    root = unpack_debian_root(directory)
    bundle = host_ca_bundle()
    if bundle is not None:
        shutil.copyfile(bundle, root / HOST_CA_INSIDE.lstrip("/"))
    return root


def prepared_root(directory: Path, wheel: Path) -> Gateway:
    """A fresh root with the installer's files and the wheel copied in, as on a gateway."""
    root = fresh_root(directory)
    source = root / SOURCE_INSIDE.lstrip("/")
    for part in ("contrib", "config", "systemd"):
        shutil.copytree(REPO / part, source / part)
    shutil.copy(wheel, source)
    return Gateway(root, f"{SOURCE_INSIDE}/{wheel.name}")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Iterator[Gateway]:
    target = prepared_root(tmp_path_factory.mktemp("debian") / "root", wheel)
    target.first_install = target.install(target.wheel)
    yield target
    shutil.rmtree(target.root, ignore_errors=True)


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Every file under WATCHED: type, mode, owner, size, mtime and link target."""
    found: dict[str, tuple[object, ...]] = {}
    for top in WATCHED:
        for directory, dirs, files in os.walk(root / top):
            for name in dirs + files:
                path = Path(directory) / name
                info = path.lstat()
                link = os.readlink(path) if stat.S_ISLNK(info.st_mode) else None
                key = str(path.relative_to(root))
                found[key] = (info.st_mode, info.st_uid, info.st_gid, info.st_size, info.st_mtime_ns, link)
    return found


def mode_and_owner(path: Path) -> tuple[str, int, int]:
    info = path.lstat()
    return oct(stat.S_IMODE(info.st_mode)), info.st_uid, info.st_gid


def test_install_creates_the_user_files_and_enables_the_service(gateway: Gateway) -> None:
    lines = gateway.first_install
    assert all(line.startswith("mcu-updater install: ") for line in lines)
    assert "mcu-updater install: venv /opt/mcu-updater/venv: installed mcu-updater 0.1.0" in lines
    assert "mcu-updater install: group gpio: created (Raspberry Pi OS has it; plain Debian does not)" in lines
    # The shipped configuration names a public key the operator still has to install.
    assert f"mcu-updater install: check-config: {CONFIG}:42: target.public_key: " in "\n".join(lines)

    groups = gateway.run("id", "-nG", "mcu-updater")
    assert set(groups.stdout.split()) == {"mcu-updater", "dialout", "gpio"}, groups.stderr
    passwd = gateway.path("/etc/passwd").read_text()
    assert re.search(r"^mcu-updater:x:\d+:\d+:[^:]*:/var/lib/mcu-updater:/usr/sbin/nologin$", passwd, re.M)

    for inside, shipped in ((CONFIG, "config/mcu-updater.yaml"), (UNIT, "systemd/mcu-updater.service")):
        assert gateway.path(inside).read_bytes() == (REPO / shipped).read_bytes()
        assert mode_and_owner(gateway.path(inside)) == ("0o644", 0, 0)
    assert gateway.path(RULES).read_bytes() == (REPO / "contrib/99-mcu-updater.rules").read_bytes()
    assert mode_and_owner(gateway.path(RULES)) == ("0o644", 0, 0)
    assert mode_and_owner(gateway.path(FIRMWARE)) == ("0o755", 0, 0)
    assert mode_and_owner(gateway.path(VENV_EXE))[1:] == (0, 0)
    assert os.readlink(gateway.path(LINK)) == VENV_EXE
    assert os.readlink(gateway.path(WANTS)) == UNIT

    version = gateway.run("mcu-updater", "--version")
    assert version.stdout.strip() == "mcu-updater 0.1.0", version.stderr


def test_installed_unit_passes_systemd_verify(gateway: Gateway) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing (Debian: apt install systemd)")
    done = subprocess.run(
        ["systemd-analyze", "verify", f"--root={gateway.root}", "mcu-updater.service"],
        capture_output=True,
        text=True,
        check=False,
    )
    # verify exits 0 even for unknown keys and bad values: any output at all is a finding.
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_rerun_changes_nothing(gateway: Gateway) -> None:
    before = snapshot(gateway.root)
    lines = gateway.install(gateway.wheel)
    assert snapshot(gateway.root) == before
    steps = [line.removeprefix("mcu-updater install: ") for line in lines]
    changed = [
        s for s in steps if not re.search(r": (unchanged|exists|exists, in dialout and gpio|enabled)$", s)
    ]
    assert changed == [
        next(step for step in steps if step.startswith("check-config: ")),
        "service: systemd is not running here; it starts at the next boot (or: systemctl start mcu-updater)",
        "done; check the gateway with: mcu-updater doctor",
    ]


def test_edited_config_is_kept_and_checks_out(gateway: Gateway) -> None:
    config = gateway.path(CONFIG)
    edited = config.read_text().replace("  port: /dev/serial0 ", "  port: /dev/ttyAMA0 ")
    assert edited != config.read_text()
    config.write_text(edited)
    shutil.copyfile(shared_fixture("key_a_public.pem"), gateway.path("/etc/mcu-updater/dfu_public_key.pem"))

    lines = gateway.install(gateway.wheel)
    assert f"mcu-updater install: {CONFIG}: yours, kept" in lines
    assert f"mcu-updater install: check-config: {CONFIG}: OK (port /dev/ttyAMA0, " in "\n".join(lines)
    assert config.read_text() == edited
    assert gateway.path(CONFIG + ".dist").read_bytes() == (REPO / "config/mcu-updater.yaml").read_bytes()

    check = gateway.run("mcu-updater", "check-config", CONFIG)
    assert check.returncode == 0, check.stderr
    assert check.stdout.startswith(f"{CONFIG}: OK (port /dev/ttyAMA0, gpio backend gpiod, 1 firmware entry)")


def test_doctor_runs_in_the_installed_gateway(gateway: Gateway) -> None:
    done = gateway.run("mcu-updater", "doctor")
    lines = done.stdout.splitlines()
    # No UART, no GPIO chips and no packages in this root: FAILs, but the installation's part is OK.
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr == ""
    assert f"OK    config     {CONFIG} is valid" in lines
    assert "OK    groups     mcu-updater (service user) is in dialout and gpio" in lines
    assert "FAIL  port       /dev/ttyAMA0 does not exist" in "\n".join(lines)
    assert f"FAIL  firmware   no firmware packages in {FIRMWARE}" in "\n".join(lines)


def test_upgrade_rebuilds_the_venv(gateway: Gateway) -> None:
    wanted = gateway.path(STAMP).read_text()
    gateway.path(STAMP).write_text("an older release\n")
    lines = gateway.install(gateway.wheel)
    assert "mcu-updater install: venv /opt/mcu-updater/venv: installed mcu-updater 0.1.0" in lines
    assert gateway.path(STAMP).read_text() == wanted
    assert not gateway.path("/opt/mcu-updater/venv.old").exists()
    assert gateway.run("mcu-updater", "--version").returncode == 0


def test_uninstall_keeps_config_and_user_until_purge(gateway: Gateway) -> None:
    lines = gateway.install("--uninstall")
    assert "mcu-updater install: service: disabled" in lines
    for gone in (UNIT, WANTS, RULES, "/opt/mcu-updater", LINK):
        assert not os.path.lexists(gateway.path(gone)), gone
    assert gateway.path(CONFIG).exists()
    assert gateway.path(FIRMWARE).is_dir()
    assert gateway.run("id", "mcu-updater").returncode == 0

    gateway.install("--uninstall", "--purge")
    assert not gateway.path("/etc/mcu-updater").exists()
    assert not gateway.path("/usr/share/mcu-updater").exists()
    assert gateway.run("id", "mcu-updater").returncode != 0
    assert "gpio:" in gateway.path("/etc/group").read_text()  # other software may use the group


@pytest.fixture
def image(tmp_path: Path) -> Iterator[Gateway]:
    """A fresh root, removed afterwards (a few hundred MB)."""
    target = Gateway(fresh_root(tmp_path / "image"), wheel="")
    yield target
    shutil.rmtree(target.root, ignore_errors=True)


def test_root_option_installs_an_image_from_this_source_tree(image: Gateway) -> None:
    """As an image builder runs it: from outside the root, with the tree the script is in as the source."""
    done = subprocess.run(
        ["sh", str(REPO / "contrib/install.sh"), "--root", str(image.root)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=BASE_ENV | pip_env(),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert os.readlink(image.path(WANTS)) == UNIT
    assert image.path(CONFIG).read_bytes() == (REPO / "config/mcu-updater.yaml").read_bytes()
    groups = image.run("id", "-nG", "mcu-updater")
    assert set(groups.stdout.split()) == {"mcu-updater", "dialout", "gpio"}
    assert image.run("mcu-updater", "--version").stdout.strip() == "mcu-updater 0.1.0"
    assert not image.path("/opt/mcu-updater/.source").exists()
