"""`mcu-updater simulate` as a child process on a real pty, and our CLI run against it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from mcu_updater.adapters import serial_connector
from mcu_updater.sim.device import Timing, VirtualNrf52
from mcu_updater.sim.pty import PtyServer
from mcu_updater.sim.stats import Stats
from mcu_updater.updater import Inventory, read_inventory

CLI = [sys.executable, "-m", "mcu_updater"]
FAST_BAUD = 1_000_000  # the simulator models line time at this rate; a pty carries any rate


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def events(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.stdout.splitlines() if line.startswith("{")]


class SimulatorProcess:
    """A `mcu-updater simulate` child; ``port`` is its pty, ``stop()`` returns its summary."""

    def __init__(self, state: Path, *extra: str, baud: int = FAST_BAUD) -> None:
        self.baud = baud
        self.process = subprocess.Popen(
            [*CLI, "simulate", "--state", str(state), "--baud", str(baud), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        first = self.process.stdout.readline()
        if not first.startswith("PTY /dev/"):
            _, err = self.process.communicate(timeout=10)
            raise AssertionError(f"simulate did not print its pty first: {first!r} {err}")
        self.port = first.split()[1]

    def stop(self) -> str:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        out, err = self.process.communicate(timeout=15)
        assert self.process.returncode == 0, f"simulate exited {self.process.returncode}: {err}"
        return out

    def __enter__(self) -> SimulatorProcess:
        return self

    def __exit__(self, *_: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate(timeout=15)


class DaemonProcess:
    """`mcu-updater run --config FILE` as systemd runs it: with a NOTIFY_SOCKET, ready at READY=1."""

    def __init__(self, config: Path, notify_path: Path) -> None:
        self.config = config
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(notify_path))
        self.notify.settimeout(60)
        self.messages: list[str] = []
        self.process = subprocess.Popen(
            [*CLI, "run", "--config", str(config)],
            env={**os.environ, "NOTIFY_SOCKET": str(notify_path)},
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait_ready(self) -> None:
        while "READY=1" not in self.messages:
            self.messages.append(self.notify.recv(4096).decode())

    def last_run(self) -> dict[str, Any]:
        """The last run's record, as `mcu-updater status --json` reports it."""
        status = run_cli("status", "--json", "--config", str(self.config))
        assert status.exit_code == 0, status.stderr
        record = json.loads(status.stdout)["last_run"]
        assert isinstance(record, dict), status.stdout
        return record

    def stop(self) -> str:
        """SIGTERM; assert a clean exit; return its stderr."""
        self.process.send_signal(signal.SIGTERM)
        _, err = self.process.communicate(timeout=20)
        assert self.process.returncode == 0, err
        assert "Traceback" not in err
        return err

    def __enter__(self) -> DaemonProcess:
        return self

    def __exit__(self, *_: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.communicate()
        self.notify.close()


class SimulatorThread:
    """The virtual nRF52 of `mcu-updater simulate` on a real pty, served by a thread of the test process,
    so a test can read its traffic counters (``stats``) between commands without restarting it."""

    def __init__(self, public_key: ec.EllipticCurvePublicKey | None = None) -> None:
        self._public_key = public_key
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._serve(),))
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._device: VirtualNrf52 | None = None
        self._failure: BaseException | None = None
        self.port = ""

    async def _serve(self) -> None:
        try:
            timing = Timing(baud=FAST_BAUD)
            async with (
                VirtualNrf52(public_key=self._public_key, timing=timing) as device,
                PtyServer(device) as server,
            ):
                self._device, self.port, self._stop = device, server.path, asyncio.Event()
                self._started.set()
                await self._stop.wait()
        except BaseException as error:
            self._failure = error
            raise
        finally:
            self._started.set()

    @property
    def stats(self) -> Stats:
        assert self._device is not None
        return self._device.stats

    def __enter__(self) -> SimulatorThread:
        self._thread.start()
        self._started.wait(30)
        if self._failure is not None or not self.port:
            raise AssertionError(f"the simulator did not start: {self._failure!r}")
        return self

    def __exit__(self, *_: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        self._loop.close()


def run_cli(*args: str, timeout: float = 120) -> CliResult:
    done = subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        check=False,
    )
    return CliResult(done.returncode, done.stdout, done.stderr)


def query_inventory(port: str, baud: int = FAST_BAUD) -> Inventory:
    """Read FIRMWARE_VERSION from a simulator through the real serial stack."""

    async def query() -> Inventory:
        client = await serial_connector(port, baud, True)()
        try:
            await client.wait_ready()
            return await read_inventory(client)
        finally:
            await client.link.close()

    return asyncio.run(query())
