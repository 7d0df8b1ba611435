"""What the OTA-engine tests share: the engines' tools, a gateway on the virtual nRF52, the hooks' env.

The engines (Debian's mender-client, mender-artifact, swupdate, rauc) are installed by `./dev test`. A test
whose tool is missing skips with the reason, except under CI (``CI`` set), where it fails: CI must run them.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from mcu_updater.dfu.wire import ImageType
from tests.conftest import shared_fixture
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
def gateway(directory: Path) -> Iterator[Gateway]:
    """A fresh virtual nRF52 (SDK 15.2 bootloader, key_a) and a configuration that reaches it."""
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
                firmware: {shared_fixture("app_v2_signed.zip")}
                state_dir: {state_dir}
                runtime_dir: {directory / "run"}
                """
            )
        )
        yield Gateway(sim, config, state_dir)
