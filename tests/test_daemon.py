"""The daemon end to end on the virtual nRF52: its lines, its button, sd_notify, signals, control socket."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from mcu_updater.control import request, stream
from mcu_updater.daemon import Daemon, DaemonSettings, combine_firmware
from mcu_updater.dfu.package import DfuPackage, load_package
from mcu_updater.errors import ConfigError, TransientError
from mcu_updater.hw.button import GpiodButton
from mcu_updater.hw.specs import ButtonSpec, TargetLine
from mcu_updater.jobs import Job, JobKind
from mcu_updater.notify import Notifier
from mcu_updater.sim.bootloader import Mode
from mcu_updater.sim.demo_firmware import DemoFirmware, build_demo_firmware
from mcu_updater.sim.device import Timing, VirtualNrf52
from mcu_updater.sim.faults import Faults
from mcu_updater.sim.gpio import FakeChip, FakeGpio
from mcu_updater.sim.lines import VirtualTargetLines
from mcu_updater.state import StateStore
from mcu_updater.target import Target
from mcu_updater.updater import Options
from tests.hosts import FAST, connector, fixture_package, key_a

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def firmware(tmp_path_factory: pytest.TempPathFactory) -> DemoFirmware:
    return build_demo_firmware(tmp_path_factory.mktemp("firmware"))


def demo_package(firmware: DemoFirmware) -> DfuPackage:
    packages = [load_package(path, public_key=firmware.public_key) for path in firmware.packages]
    return combine_firmware(packages, firmware.directory)


class Notifications:
    """A service manager's end of NOTIFY_SOCKET: reads every datagram as it arrives, as systemd does."""

    def __init__(self, path: Path) -> None:
        self.messages: list[str] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self._read)

    def _read(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while True:
                self.messages.append(self.sock.recv(4096).decode())

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()


@pytest.fixture
async def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Notifications]:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    listener = Notifications(tmp_path / "notify")
    yield listener
    listener.close()


async def until(condition: Callable[[], bool]) -> None:
    """Poll the daemon's observable state (it has no events to offer tests)."""
    while not condition():  # noqa: ASYNC110 - polling public state keeps the daemon free of test hooks
        await asyncio.sleep(0.002)


@dataclass
class Rig:
    daemon: Daemon
    device: VirtualNrf52
    lines: VirtualTargetLines
    gpio: FakeGpio
    task: asyncio.Task[int]
    runtime: Path
    store: StateStore

    async def wait_runs(self, count: int) -> None:
        await until(lambda: self.daemon.state.runs >= count and not self.daemon.running)


BUTTON = ButtonSpec("pinctrl-bcm2711", "GPIO26", debounce=0.005)


@pytest.fixture
async def rig(firmware: DemoFirmware, tmp_path: Path, notify_socket: Notifications) -> AsyncIterator[Rig]:
    rig = await start_rig(firmware, tmp_path)
    yield rig
    if not rig.task.done():
        rig.daemon.stop()
        await rig.task
    rig.lines.close()
    await rig.device.close()


async def start_rig(
    firmware: DemoFirmware,
    tmp_path: Path,
    *,
    faults: Faults | None = None,
    package: DfuPackage | None = None,
    public_key: ec.EllipticCurvePublicKey | None = None,
    timing: Timing | None = None,
) -> Rig:
    device = VirtualNrf52(
        public_key=public_key or firmware.public_key, faults=faults, timing=timing or Timing()
    )
    lines = VirtualTargetLines(device, initial={TargetLine.RESET: True})
    device.start()
    gpio = FakeGpio(FakeChip("/dev/gpiochip0", "pinctrl-bcm2711", [f"GPIO{n}" for n in range(58)]))
    button = GpiodButton(BUTTON, gpio=gpio)
    chosen = package or demo_package(firmware)
    settings = DaemonSettings(
        load_firmware=lambda: chosen,
        connect=connector(device, timeouts=FAST),
        options=Options(abort_when_idle=True),
        load_package=lambda path: load_package(path, public_key=public_key or firmware.public_key),
    )
    runtime = tmp_path / "run"
    daemon = Daemon(
        settings,
        lines=lines,
        target=Target(lines),
        state_dir=tmp_path / "state",
        runtime_dir=runtime,
        notifier=Notifier(),
        button_start=button.start,
        backoff=(0.05,),
    )
    task = asyncio.create_task(daemon.serve())
    return Rig(daemon, device, lines, gpio, task, runtime, StateStore(tmp_path / "state"))


async def test_start_up_run_installs_everything_then_boots_the_app(
    rig: Rig, notify_socket: Notifications
) -> None:
    await rig.wait_runs(1)
    record = rig.daemon.state.last_run
    assert record is not None
    assert record.result == "updated"
    assert record.sent == ("softdevice", "application")
    assert await rig.device.until_booted() == Mode.APP, "DFU released and reset pulsed: the app runs"
    assert rig.device.stats.resets["dfu-complete"] == 2, "no reset pulse cut a post-validation short"
    assert "STATUS=confirming activation" in notify_socket.messages
    kinds = {entry.type: entry.version for entry in rig.store.load().inventory}
    assert kinds["softdevice"] == 6001001
    assert kinds["application"] == 1
    messages = notify_socket.messages
    assert any(m.startswith("EXTEND_TIMEOUT_USEC=") for m in messages)
    ready = messages.index("READY=1")
    assert any(m.startswith("STATUS=updating softdevice") for m in messages[:ready])
    assert any("STATUS=updating application" in m for m in messages[:ready])


async def test_button_press_runs_again_and_finds_everything_up_to_date(rig: Rig) -> None:
    await rig.wait_runs(1)
    await rig.gpio.press("GPIO26")
    await rig.wait_runs(2)
    record = rig.daemon.state.last_run
    assert record is not None
    assert record.result == "up-to-date"
    assert rig.device.stats.resets["abort"] == 1
    assert await rig.device.until_booted() == Mode.APP


async def test_requests_during_a_run_queue_exactly_one_more(rig: Rig) -> None:
    await until(lambda: rig.daemon.running)
    for _ in range(3):
        reply = await request(rig.runtime / "control.sock", "trigger")
        assert reply["ok"]
        assert reply["queued"]
    await rig.wait_runs(2)
    await asyncio.sleep(0.3)
    assert rig.daemon.state.runs == 2


async def test_status_over_the_control_socket(rig: Rig) -> None:
    await rig.wait_runs(1)
    status = await request(rig.runtime / "control.sock", "status")
    assert status["ok"]
    assert status["last_run"]["result"] == "updated"
    assert {"type": "application", "version": 1, "address": 0x26000, "length": 24576} in status["inventory"]


async def test_sigterm_mid_transfer_returns_the_target_and_exits(
    firmware: DemoFirmware, tmp_path: Path, notify_socket: Notifications
) -> None:
    # At 460800 baud the application takes ~0.5 s on the line: SIGTERM lands inside its transfer.
    rig = await start_rig(firmware, tmp_path, timing=Timing(baud=460_800))
    try:
        await until(lambda: rig.daemon.phase.startswith("updating application"))
        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(rig.task, 5) == 0
        record = rig.store.load().last_run
        assert record is not None
        assert record.result == "failed"
        assert "stopped" in record.error
        assert "STOPPING=1" in notify_socket.messages
        # The SoftDevice went in; the app transfer was cut: the bootloader waits for the next run.
        assert await rig.device.until_booted() == Mode.DFU
    finally:
        rig.lines.close()
        await rig.device.close()


async def test_transient_fault_is_retried_and_resumed(
    firmware: DemoFirmware, tmp_path: Path, notify_socket: Notifications
) -> None:
    rig = await start_rig(firmware, tmp_path, faults=Faults(power_cycle_at=20000))
    try:
        await rig.wait_runs(1)
        record = rig.daemon.state.last_run
        assert record is not None
        assert record.result == "updated", record
    finally:
        rig.daemon.stop()
        await rig.task
        rig.lines.close()
        await rig.device.close()


async def test_device_refusal_is_reported_and_not_retried(
    firmware: DemoFirmware, tmp_path: Path, notify_socket: Notifications
) -> None:
    refused = fixture_package("app_v3_sdreq_A8_signed.zip")
    rig = await start_rig(firmware, tmp_path, package=refused, public_key=key_a())
    try:
        await rig.wait_runs(1)
        record = rig.daemon.state.last_run
        assert record is not None
        assert record.result == "failed"
        assert record.exit_code == 65
        assert "sd_req [0xA8]" in record.error
        assert "--sd-req 0xAF" in record.hint
        assert record.device_code == "EXT 0x07 SD_VERSION_FAILURE"
        assert rig.device.stats.objects_created["command"] == 1, "a refusal is not retried"
    finally:
        rig.daemon.stop()
        await rig.task
        rig.lines.close()
        await rig.device.close()


def test_two_packages_of_one_kind_are_a_deployment_error(firmware: DemoFirmware) -> None:
    package = demo_package(firmware)
    with pytest.raises(ConfigError, match="two firmware packages provide the softdevice image"):
        combine_firmware([package, replace(package)], firmware.directory)


async def test_sighup_reloads_and_checks_again(rig: Rig) -> None:
    await rig.wait_runs(1)
    reloaded = []

    def reload() -> DaemonSettings:
        reloaded.append(True)
        return rig.daemon.settings

    rig.daemon.reload = reload
    os.kill(os.getpid(), signal.SIGHUP)
    await rig.wait_runs(2)
    assert reloaded == [True]
    record = rig.daemon.state.last_run
    assert record is not None
    assert record.result == "up-to-date"


async def test_a_job_waits_for_the_current_run_then_streams_its_events(
    rig: Rig, firmware: DemoFirmware
) -> None:
    await until(lambda: rig.daemon.running)
    app = firmware.packages[1]
    events: list[dict[str, object]] = []
    job = Job(JobKind.APPLY, app.read_bytes(), str(app))
    result = await stream(rig.runtime / "control.sock", job.to_request(), events.append)
    assert events[0] == {"event": "accepted", "kind": "apply", "queued": True}
    assert result["exit_code"] == 0
    assert result["result"] == "up-to-date", "the start-up run had installed it before the job ran"
    assert rig.daemon.state.runs == 2
    assert [e["event"] for e in events][1:4] == ["connected", "inventory", "plan"]


async def test_stopping_during_a_job_ends_its_stream_and_records_the_cut(
    firmware: DemoFirmware, tmp_path: Path, notify_socket: Notifications
) -> None:
    rig = await start_rig(firmware, tmp_path, timing=Timing(baud=460_800))
    try:
        await rig.wait_runs(1)
        newer = build_demo_firmware(tmp_path / "v2", app_version=2).packages[1]
        job = Job(JobKind.APPLY, newer.read_bytes(), str(newer))
        streamed = asyncio.create_task(stream(rig.runtime / "control.sock", job.to_request(), lambda _: None))
        await until(lambda: rig.daemon.phase.startswith("updating application"))
        rig.daemon.stop()
        with pytest.raises(TransientError, match="closed the connection before the result"):
            await streamed
        assert await asyncio.wait_for(rig.task, 5) == 0
        record = rig.store.load().last_run
        assert record is not None
        assert (record.result, record.exit_code, record.package) == ("failed", 75, str(newer))
        assert not rig.daemon.packages.current.exists(), "a cut job's package is not kept"
    finally:
        rig.lines.close()
        await rig.device.close()


async def test_a_queued_job_whose_caller_left_is_dropped(rig: Rig, firmware: DemoFirmware) -> None:
    await until(lambda: rig.daemon.running)
    app = firmware.packages[1]
    reader, writer = await asyncio.open_unix_connection(rig.runtime / "control.sock")
    writer.write(json.dumps(Job(JobKind.APPLY, app.read_bytes(), str(app)).to_request()).encode() + b"\n")
    accepted = json.loads(await reader.readline())
    assert accepted == {"event": "accepted", "kind": "apply", "queued": True}
    writer.close()  # the caller gives up while the start-up run still goes on
    await writer.wait_closed()
    await until(lambda: rig.daemon.jobs == 0)
    await rig.wait_runs(1)
    record = rig.daemon.state.last_run
    assert record is not None
    assert (rig.daemon.state.runs, record.package) == (1, ""), "only the start-up run ran"
