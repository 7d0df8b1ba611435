"""The security promises of docs/threat-model.md, kept by the real daemon and CLI against the simulator:
keys in both of nrfutil's forms, require_signature, the downgrade policy and the device's own
downgrade refusal, and no network listener."""

from __future__ import annotations

import os
import re
import subprocess
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mcu_updater.dfu.initpacket import FwType
from tests.conftest import shared_fixture
from tests.nrfutil import nrfutil
from tests.packages import TEST_KEY, make_image, write_package
from tests.simproc import FAST_BAUD, DaemonProcess, SimulatorProcess, run_cli

pytestmark = pytest.mark.timeout(180)

KEY_A = shared_fixture("key_a_public.pem")


def bytes_in(summary: str) -> int:
    match = re.search(r"summary: (\d+) bytes in", summary)
    assert match, summary
    return int(match.group(1))


def images_received(summary: str) -> list[str]:
    return re.findall(r"^image: (\w+ v\d+)", summary, re.MULTILINE)


def write_config(folder: Path, port: str, firmware: Path, **sections: str) -> Path:
    path = folder / "mcu-updater.yaml"
    extra = "".join(f"{name}:\n{textwrap.indent(body, '  ')}" for name, body in sections.items())
    path.write_text(
        f"serial:\n  port: {port}\n  baud: {FAST_BAUD}\ngpio:\n  backend: none\nfirmware: {firmware}\n"
        f"state_dir: {folder / 'state'}\nruntime_dir: {folder / 'run'}\n{extra}"
    )
    return path


@contextmanager
def daemon(config: Path) -> Iterator[DaemonProcess]:
    """`mcu-updater run` from the end of its start-up run (READY=1) to a clean SIGTERM exit."""
    with DaemonProcess(config, config.parent / "notify") as running:
        running.wait_ready()
        yield running
        running.stop()


def flash(sim: SimulatorProcess, package: str, *extra: str) -> tuple[int, str]:
    result = run_cli(
        "flash", str(shared_fixture(package)), "--port", sim.port, "--baud", str(FAST_BAUD), *extra
    )
    assert "Traceback" not in result.stderr
    return result.exit_code, result.stderr


# --- keys and signatures --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def key_a_code(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """key_a's public key as nrfutil 6.1.7 itself prints it with --format code (dfu_public_key.c)."""
    done = subprocess.run(
        [
            str(nrfutil()),
            "keys",
            "display",
            "--key",
            "pk",
            "--format",
            "code",
            str(shared_fixture("key_a.pem")),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "pk[64]" in done.stdout
    path = tmp_path_factory.mktemp("keys") / "dfu_public_key.c"
    path.write_text(done.stdout)
    return path


def test_nrfutil_code_key_in_the_config_verifies_and_installs(tmp_path: Path, key_a_code: Path) -> None:
    with SimulatorProcess(tmp_path / "nrf52.json", "--public-key", str(KEY_A)) as sim:
        config = write_config(
            tmp_path, sim.port, shared_fixture("app_v2_signed.zip"), target=f"public_key: {key_a_code}\n"
        )
        assert run_cli("check-config", str(config)).exit_code == 0
        with daemon(config) as running:
            assert running.last_run()["result"] == "updated"
            assert_no_network_listener(running.process.pid)
        summary = sim.stop()
    assert images_received(summary) == ["application v2"]


@pytest.mark.parametrize("form", ["pem", "code"])
def test_a_package_signed_with_another_key_is_refused_before_sending(
    tmp_path: Path, key_a_code: Path, form: str
) -> None:
    """The config holds key_a (in either form); the package is signed by a key the gateway does not trust."""
    other = tmp_path / "other.zip"
    write_package(other, make_image(FwType.APPLICATION, sd_req=(0xAF,), key=TEST_KEY))
    key = KEY_A if form == "pem" else key_a_code
    with SimulatorProcess(tmp_path / "nrf52.json") as sim:
        config = write_config(tmp_path, sim.port, other, target=f"public_key: {key}\n")
        with daemon(config) as running:
            record = running.last_run()
        summary = sim.stop()
    assert record["result"] == "failed"
    assert "the signature does not verify with the given public key" in str(record["error"])
    assert "sign the package with the private key" in str(record["hint"])
    assert bytes_in(summary) == 0


def test_require_signature_refuses_an_unsigned_package_before_sending(tmp_path: Path) -> None:
    with SimulatorProcess(tmp_path / "nrf52.json") as sim:
        config = write_config(
            tmp_path,
            sim.port,
            shared_fixture("app_v2_unsigned.zip"),
            target=f"public_key: {KEY_A}\n",
            policy="require_signature: true\n",
        )
        with daemon(config) as running:
            record = running.last_run()
        summary = sim.stop()
    assert record["result"] == "failed"
    assert "app_a.dat is unsigned" in str(record["error"])
    assert "--key-file" in str(record["hint"])
    assert bytes_in(summary) == 0


def test_a_key_without_the_requirement_lets_unsigned_packages_pass(tmp_path: Path) -> None:
    """require_signature: false with a key: signed packages are verified, unsigned ones allowed (the
    Azure sample's bootloader checks nothing either way)."""
    with SimulatorProcess(tmp_path / "nrf52.json", "--profile", "azure-sample") as sim:
        config = write_config(
            tmp_path,
            sim.port,
            shared_fixture("app_v2_unsigned.zip"),
            target=f"public_key: {KEY_A}\nbootloader: azure-sample\n",
            policy="require_signature: false\n",
        )
        with daemon(config) as running:
            assert running.last_run()["result"] == "updated"
        summary = sim.stop()
    assert images_received(summary) == ["application v2"]


# --- downgrades ------------------------------------------------------------------------------------


def test_downgrade_denied_by_policy_is_refused_before_any_image_is_sent(tmp_path: Path) -> None:
    with SimulatorProcess(tmp_path / "nrf52.json", "--public-key", str(KEY_A)) as sim:
        assert flash(sim, "app_v2_signed.zip") == (0, "")
        config = write_config(
            tmp_path,
            sim.port,
            shared_fixture("app_v1_signed_downgrade.zip"),
            target=f"public_key: {KEY_A}\n",
            policy="downgrade: deny\n",
        )
        with daemon(config) as running:
            record = running.last_run()
        summary = sim.stop()
    assert record["result"] == "failed"
    assert re.search(
        r"application v1 .*older than .*\(2\); the downgrade policy is deny", str(record["error"])
    )
    assert "policy.downgrade: allow" in str(record["hint"])
    assert images_received(summary) == ["application v2"], "nothing after the first flash"


def test_downgrade_allowed_by_policy_is_installed(tmp_path: Path) -> None:
    """After a root-filesystem rollback: the Azure sample's bootloader takes any other version."""
    with SimulatorProcess(tmp_path / "nrf52.json", "--profile", "azure-sample") as sim:
        assert flash(sim, "app_v2_signed.zip") == (0, "")
        config = write_config(
            tmp_path,
            sim.port,
            shared_fixture("app_v1_signed_downgrade.zip"),
            target=f"public_key: {KEY_A}\nbootloader: azure-sample\n",
            policy="downgrade: allow\n",
        )
        with daemon(config) as running:
            assert running.last_run()["result"] == "updated"
        summary = sim.stop()
    assert images_received(summary) == ["application v2", "application v1"]


def test_the_stock_bootloaders_downgrade_refusal_is_reported_in_words(tmp_path: Path) -> None:
    """Policy allows it (flash never refuses a downgrade itself); the SDK bootloader says EXT 0x05."""
    with SimulatorProcess(tmp_path / "nrf52.json", "--public-key", str(KEY_A)) as sim:
        assert flash(sim, "app_v2_signed.zip") == (0, "")
        code, stderr = flash(sim, "app_v1_signed_downgrade.zip", "--public-key", str(KEY_A))
        summary = sim.stop()
    assert code == 65
    (line,) = stderr.splitlines()
    assert "firmware version (1) is too low for the device (it runs 2)" in line
    assert "downgrades (and re-sending the same bootloader) are refused" in line
    assert "EXT 0x05 FW_VERSION_FAILURE" in line
    assert "rebuild the package with a higher --application-version" in line
    assert images_received(summary) == ["application v2"]


# --- no network listener ---------------------------------------------------------------------------


# Where each /proc/net table keeps a socket's inode (IP tables: "tx_queue rx_queue" and "tr tm->when"
# are two header words each but one field in the rows).
IP_TABLES = ("tcp", "tcp6", "udp", "udp6", "udplite", "udplite6", "raw", "raw6")
INODE_COLUMN = {"unix": 6, "netlink": 9} | dict.fromkeys(IP_TABLES, 9)


def _inodes(*tables: str) -> set[str]:
    """Socket inodes listed in /proc/net's ``tables``."""
    found: set[str] = set()
    for table in tables:
        path = Path("/proc/net") / table
        if path.exists():
            rows = path.read_text().splitlines()[1:]
            found |= {row.split()[INODE_COLUMN[table]] for row in rows if row.strip()}
    return found


def assert_no_network_listener(pid: int) -> None:
    """Every socket the process holds is an AF_UNIX socket (journald, notify, control), none is IP."""
    sockets = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with_target = os.readlink(fd) if fd.is_symlink() else ""
        if with_target.startswith("socket:["):
            sockets.add(with_target[len("socket:[") : -1])
    assert sockets, "the daemon holds its control socket at least"
    assert Path("/proc/net/tcp").exists(), "the IP tables are readable"
    assert not sockets & _inodes(*IP_TABLES), "the daemon holds an IP socket"
    assert sockets <= _inodes("unix", "netlink"), "the daemon holds a socket of another family"
