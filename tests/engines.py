"""What the OTA-engine tests share: the engines' tools, a gateway on the virtual nRF52, the hooks' env.

The engines (Debian's mender-client, mender-artifact, swupdate, rauc) are installed by `./dev test`. A test
whose tool is missing skips with the reason, except under CI (``CI`` set), where it fails: CI must run them.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from mcu_updater.dfu.initpacket import FwType
from mcu_updater.dfu.wire import ImageType
from tests.conftest import shared_fixture
from tests.packages import firmware, make_image, write_package
from tests.simproc import FAST_BAUD, SimulatorProcess, query_inventory

CONTRIB = Path(__file__).resolve().parents[1] / "contrib"


def missing(reason: str) -> None:
    """Fail under CI, skip elsewhere, saying what is missing and how to get it."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run the OTA-engine tests)")
    pytest.skip(reason)


def require_tools(*names: str) -> None:
    absent = [name for name in names if shutil.which(name) is None]
    if absent:
        missing(
            f"{', '.join(absent)} not installed: `./dev test` installs the OTA engines' Debian packages when "
            "run as root (see ENGINE_TOOLS in ./dev)"
        )


def require_root(why: str) -> None:
    if os.geteuid() != 0:
        missing(f"needs root: {why}")


@dataclass
class Gateway:
    """A gateway configuration whose serial port is a `mcu-updater simulate` pty (already in DFU mode)."""

    sim: SimulatorProcess
    config: Path
    state_dir: Path

    def environment(self) -> dict[str, str]:
        """What an engine passes to our hooks: `mcu-updater` on PATH and the configuration's path."""
        bin_dir = Path(sys.executable).parent
        return {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
            "MCU_UPDATER_CONFIG": str(self.config),
        }

    def application_version(self) -> int | None:
        """The application version the virtual nRF52 reports now (None: no application)."""
        application = query_inventory(self.sim.port).find(ImageType.APPLICATION)
        return application.version if application is not None else None


@contextmanager
def gateway(directory: Path, firmware: Path | None = None) -> Iterator[Gateway]:
    """A fresh virtual nRF52 (SDK 15.2 bootloader, key_a) and a configuration that reaches it, shipping
    ``firmware`` (default: app_v2_signed.zip) for the daemon."""
    directory.mkdir(parents=True, exist_ok=True)
    public_key = shared_fixture("key_a_public.pem")
    with SimulatorProcess(directory / "nrf52.json", "--public-key", str(public_key)) as sim:
        config = directory / "mcu-updater.yaml"
        state_dir = directory / "state"
        config.write_text(
            textwrap.dedent(
                f"""\
                serial:
                  port: {sim.port}
                  baud: {FAST_BAUD}
                gpio:
                  backend: none
                target:
                  hw_version: 52
                  public_key: {public_key}
                firmware: {firmware or shared_fixture("app_v2_signed.zip")}
                state_dir: {state_dir}
                runtime_dir: {directory / "run"}
                """
            )
        )
        yield Gateway(sim, config, state_dir)


@dataclass
class Signer:
    """A self-signed RSA key and certificate, as the engines' image signatures need."""

    key: Path
    cert: Path

    @classmethod
    def create(cls, directory: Path) -> Signer:
        require_tools("openssl")
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
        return cls(key, cert)


class LoggedProcess:
    """A long-running engine process (daemon, service, bus) whose output lines are read as they come.

    It runs in its own session, so ``stop()`` ends it together with any helper process it started.
    """

    def __init__(self, command: Sequence[str], env: Mapping[str, str] | None = None) -> None:
        self.command = list(command)
        self.process = subprocess.Popen(
            self.command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 60) -> list[str]:
        """The output lines up to and including the first one containing ``text``."""
        deadline = time.monotonic() + timeout
        seen: list[str] = []
        while not seen or text not in seen[-1]:
            try:
                seen.append(self._lines.get(timeout=max(deadline - time.monotonic(), 0)))
            except queue.Empty:
                logged = "\n".join(seen)
                raise AssertionError(
                    f"{self.command[0]} never printed {text!r}; it printed:\n{logged}"
                ) from None
        return seen

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        self._reader.join(timeout=30)
        assert self.process.stdout is not None
        self.process.stdout.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


def key_a_application(path: Path, version: int) -> Path:
    """An application package signed with the fixtures' key_a (what the virtual nRF52 trusts)."""
    key = serialization.load_pem_private_key(shared_fixture("key_a.pem").read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return write_package(
        path, make_image(FwType.APPLICATION, firmware(8192, seed=version), fw_version=version, key=key)
    )
