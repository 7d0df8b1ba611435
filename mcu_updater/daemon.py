"""The service: hold the target's lines, reconcile its firmware at start, on button presses and on
`mcu-updater trigger`, tell systemd how it is going, and remember the result.

Runs are single-flight: a request that arrives during a run (button, trigger, SIGHUP reload) is not
lost and not stacked either; exactly one more run follows the current one.

A run: enter the bootloader (lines), read the inventory, plan, send what is missing one image per
session (re-reading the inventory after each reset), and return the target to its application — on
success, on failure and on SIGTERM alike. Transient failures are retried with backoff (each retry
resumes where the device stopped); device refusals are reported in words and not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import structlog

from mcu_updater import logs
from mcu_updater.control import SOCKET_NAME, ControlServer
from mcu_updater.dfu.initpacket import FwType
from mcu_updater.dfu.package import DfuPackage, Image
from mcu_updater.dfu.wire import code_label
from mcu_updater.errors import (
    ConfigError,
    DeviceRejectedError,
    LinkError,
    McuUpdaterError,
    PackageError,
    ProtocolError,
    TargetNotAnsweringError,
    TransientError,
)
from mcu_updater.hw.gpio import TargetLines
from mcu_updater.notify import Notifier
from mcu_updater.state import DaemonState, InventoryEntry, RunRecord, StateStore
from mcu_updater.target import Target
from mcu_updater.updater import (
    Action,
    Activated,
    Connector,
    Event,
    Finished,
    ImageProgress,
    ImageSent,
    ImageStarted,
    Inventory,
    InventoryRead,
    Options,
    Planned,
    UpdateRun,
    plan,
    read_inventory,
)

RETRYABLE: Final = (TransientError, ProtocolError, LinkError, TargetNotAnsweringError)
BACKOFF: Final = (1.0, 3.0, 10.0)
# How long systemd should wait for READY=1 after start: every image at a slow line rate, plus retries.
STARTUP_BUDGET: Final = 600.0
IMAGE_ORDER: Final = (FwType.SOFTDEVICE_BOOTLOADER, FwType.SOFTDEVICE, FwType.BOOTLOADER, FwType.APPLICATION)

log = structlog.get_logger("mcu_updater.daemon")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def combine_firmware(packages: Sequence[DfuPackage], source: Path) -> DfuPackage:
    """All images the gateway ships, one per kind, in send order; two of a kind is a deployment error."""
    by_kind: dict[FwType, Image] = {}
    for package in packages:
        for image in package.images:
            if image.kind in by_kind:
                raise ConfigError(
                    f"two firmware packages provide the {image.kind.name.lower()} image "
                    f"({by_kind[image.kind].label} and {image.label} in {package.path})",
                    "ship exactly one package per image kind in the firmware directory",
                )
            by_kind[image.kind] = image
    return DfuPackage(source, tuple(by_kind[kind] for kind in IMAGE_ORDER if kind in by_kind))


@dataclass(frozen=True)
class DaemonSettings:
    """What a run needs, taken from the configuration (and replaced on SIGHUP)."""

    load_firmware: Callable[[], DfuPackage]
    connect: Connector
    options: Options
    retries: int = len(BACKOFF)
    ready_after_first_run: bool = True


class Daemon:
    """One long-lived service instance; ``serve()`` returns the exit code."""

    def __init__(
        self,
        settings: DaemonSettings,
        *,
        lines: TargetLines,
        target: Target,
        state_dir: Path,
        runtime_dir: Path,
        notifier: Notifier,
        button_start: Callable[[Callable[[], None]], None] | None = None,
        reload: Callable[[], DaemonSettings] | None = None,
        backoff: Sequence[float] = BACKOFF,
    ) -> None:
        self.settings = settings
        self.lines = lines
        self.target = target
        self.store = StateStore(state_dir)
        self.control = ControlServer(
            runtime_dir / SOCKET_NAME, {"trigger": self._trigger_command, "status": self._status_command}
        )
        self.notifier = notifier
        self.button_start = button_start
        self.reload = reload
        self.backoff = tuple(backoff)
        self.state = self.store.load()
        self.phase = "starting"
        self.running = False
        self._wanted = asyncio.Event()
        self._stopping = asyncio.Event()
        self._run_task: asyncio.Task[RunRecord] | None = None
        self._progress = logs.ProgressGate()

    # --- requests -----------------------------------------------------------------------------

    def trigger(self, reason: str = "request") -> None:
        """Ask for a run; during a run this queues exactly one more."""
        log.info("update check requested", reason=reason, queued=self.running)
        self._wanted.set()

    async def _trigger_command(self) -> dict[str, Any]:
        queued = self.running
        self.trigger("control socket")
        return {"queued": queued, "running": self.running}

    async def _status_command(self) -> dict[str, Any]:
        return {"phase": self.phase, "running": self.running, **self.state.to_json()}

    def stop(self) -> None:
        log.info("stop requested")
        self._stopping.set()
        if self._run_task is not None:
            self._run_task.cancel()

    def _reload(self) -> None:
        if self.reload is None:
            return
        try:
            self.settings = self.reload()
        except McuUpdaterError as error:
            log.error(
                "configuration reload failed; keeping the old one", error=error.message, hint=error.hint
            )
            return
        log.info("configuration reloaded")
        self.trigger("reload")

    # --- the service --------------------------------------------------------------------------

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        signals = {signal.SIGTERM: self.stop, signal.SIGINT: self.stop, signal.SIGHUP: self._reload}
        for signum, handler in signals.items():
            loop.add_signal_handler(signum, handler)
        watchdog = asyncio.create_task(self.notifier.run_watchdog(), name="watchdog")
        try:
            await self.control.start()
            if self.button_start is not None:
                self.button_start(lambda: self.trigger("button"))
            if self.settings.ready_after_first_run:
                self.notifier.extend_timeout(STARTUP_BUDGET)
            else:
                self.notifier.ready()
            self._wanted.set()
            first = True
            while not self._stopping.is_set():
                await self._next_request()
                if self._stopping.is_set():
                    break
                self._wanted.clear()
                self._run_task = asyncio.create_task(self._run(), name="update-run")
                with contextlib.suppress(asyncio.CancelledError):
                    await self._run_task
                self._run_task = None
                if first and self.settings.ready_after_first_run:
                    self.notifier.ready()
                first = False
        finally:
            self.notifier.stopping()
            self._set_phase("stopping")
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog
            await self.control.close()
            for signum in signals:
                loop.remove_signal_handler(signum)
        return 0

    async def _next_request(self) -> None:
        wanted = asyncio.create_task(self._wanted.wait())
        stopping = asyncio.create_task(self._stopping.wait())
        _, pending = await asyncio.wait({wanted, stopping}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _set_phase(self, phase: str) -> None:
        self.phase = phase
        self.notifier.status(phase)

    # --- one run ------------------------------------------------------------------------------

    async def _run(self) -> RunRecord:
        self.running = True
        started = _now()
        log.info("update run started", message_id=logs.RUN_STARTED, phase="start")
        record = RunRecord("failed", started, started, error="interrupted", exit_code=75)
        try:
            record = await self._attempts(started)
        except asyncio.CancelledError:
            record = RunRecord(
                "failed", started, _now(), error="stopped during the run", hint="the next start resumes it"
            )
            raise
        except McuUpdaterError as error:
            device_code = (
                code_label(error.result, error.ext) if isinstance(error, DeviceRejectedError) else ""
            )
            record = RunRecord(
                "failed",
                started,
                _now(),
                error=error.message,
                hint=error.hint,
                exit_code=error.exit_code,
                device_code=device_code,
            )
        finally:
            self._set_phase("returning the target to its application")
            try:
                await self.target.return_to_app()
            except McuUpdaterError as error:
                log.error("could not return the target to its application", error=error.message)
            self._finish(record)
        return record

    def _finish(self, record: RunRecord) -> None:
        self.running = False
        self.state = DaemonState(self.state.inventory, record, self.state.runs + 1)
        try:
            self.store.save(self.state)
        except McuUpdaterError as error:
            log.error("could not save the state", error=error.message, hint=error.hint)
        fields: dict[str, Any] = {"result": record.result, "sent": ",".join(record.sent) or None}
        if record.result == "failed":
            log.error(
                "update run failed",
                message_id=logs.RUN_FAILED,
                error=record.error,
                hint=record.hint,
                ext_error=record.device_code or None,
                **fields,
            )
            self._set_phase(f"idle; last run failed: {record.error}")
        else:
            log.info("update run finished", message_id=logs.RUN_SUCCEEDED, **fields)
            self._set_phase(f"idle; {record.result}: {self._inventory_text()}")

    def _inventory_text(self) -> str:
        return ", ".join(f"{e.type} {e.version}" for e in self.state.inventory) or "inventory unknown"

    async def _attempts(self, started: str) -> RunRecord:
        settings = self.settings
        package = await asyncio.to_thread(settings.load_firmware)
        # Images sent by every attempt: one that installed an image and then failed (say, while
        # confirming it) leaves the next attempt nothing to send, and the run still updated it.
        sent: list[str] = []
        for attempt in range(settings.retries + 1):
            try:
                await self._session(package, settings, sent)
            except RETRYABLE as error:
                if attempt >= settings.retries or isinstance(error, DeviceRejectedError | PackageError):
                    raise
                delay = self.backoff[min(attempt, len(self.backoff) - 1)]
                log.warning(
                    "transient failure; retrying", error=error.message, retry_in_s=delay, attempt=attempt + 1
                )
                self._set_phase(f"retrying in {delay:.0f} s: {error.message}")
                await asyncio.sleep(delay)
                continue
            result = "updated" if sent else "up-to-date"
            return RunRecord(result, started, _now(), sent=tuple(dict.fromkeys(sent)))
        raise AssertionError("unreachable: the last attempt either returns or raises")

    async def _session(self, package: DfuPackage, settings: DaemonSettings, sent_names: list[str]) -> None:
        """One attempt; appends the name of every image it sends to ``sent_names`` as it goes."""
        self._set_phase("entering the bootloader")
        await self.target.enter_bootloader()
        sent: list[Image] = []
        async for event in UpdateRun(package, settings.connect, settings.options).events():
            self._on_event(event)
            if isinstance(event, ImageSent):
                sent.append(event.image)
                sent_names.append(event.image.name)
        if sent and self.target.holds_dfu:
            await self._confirm_activation(settings, package, sent)

    async def _confirm_activation(
        self, settings: DaemonSettings, package: DfuPackage, sent: list[Image]
    ) -> None:
        """Wait until the bootloader has activated the last image and reports what was sent.

        After the last EXECUTE the bootloader still writes its settings page and then activates the
        image; a reset pulse in that window would cost the update. With the DFU line held the
        bootloader comes back once it is done, which also proves the result.
        """
        self._set_phase("confirming activation")
        client = await settings.connect()
        if not settings.options.flow_control:
            await asyncio.sleep(client.timeouts.post_validation)
        try:
            seconds = await client.wait_ready(client.timeouts.activation(sent[-1].size))
            inventory = await read_inventory(client)
        finally:
            await client.link.close()
        self._remember_inventory(inventory)
        log.info(
            f"{sent[-1].name} activated", image=sent[-1].name, seconds=round(seconds, 2), phase="activate"
        )
        missing = [
            item.image.label
            for item in plan(DfuPackage(package.path, tuple(sent)), inventory)
            if item.action is not Action.SKIP
        ]
        if missing:
            raise TransientError(
                f"after activation the device does not report {', '.join(missing)}",
                "the next attempt sends it again",
            )

    def _on_event(self, event: Event) -> None:
        match event:
            case InventoryRead(inventory=inventory):
                self._remember_inventory(inventory)
                self._set_phase("reading the inventory")
                log.info("inventory", phase="inventory", inventory=self._inventory_text())
            case Planned(items=items):
                for item in items:
                    log.info(
                        f"{item.action.value} {item.image.label}: {item.reason}",
                        image=item.image.name,
                        version=item.image.version,
                        phase="plan",
                    )
            case ImageStarted(image=image):
                self._set_phase(f"updating {image.name} 0 %")
                log.info(f"sending {image.label}", image=image.name, version=image.version, phase="send")
            case ImageProgress(progress=p):
                percent = int(p.fraction * 100)
                if self._progress.should_log(p.fraction):
                    self._set_phase(f"updating {p.image} {percent} %")
                    log.info(f"{p.image} {percent} %", image=p.image, progress=percent, phase="send")
            case ImageSent(image=image, seconds=seconds, retries=retries):
                log.info(
                    f"sent {image.label} in {seconds:.1f} s",
                    message_id=logs.IMAGE_UPDATED,
                    image=image.name,
                    version=image.version,
                    retries=retries,
                    phase="sent",
                )
                self._record_sent(image)
            case Activated(image=image, seconds=seconds):
                log.info(
                    f"{image.name} activated", image=image.name, seconds=round(seconds, 2), phase="activate"
                )
            case Finished():
                pass

    def _remember_inventory(self, inventory: Inventory) -> None:
        if inventory.known:
            entries = tuple(InventoryEntry(i.kind, i.version, i.address, i.length) for i in inventory.images)
            self.state = DaemonState(entries, self.state.last_run, self.state.runs)

    def _record_sent(self, image: Image) -> None:
        """Record what the bootloader accepted (without a DFU line it is not asked again afterwards)."""
        kind = "softdevice" if image.kind == FwType.SOFTDEVICE else image.kind.name.lower()
        version = image.softdevice.version if image.softdevice and kind == "softdevice" else image.version
        others = tuple(e for e in self.state.inventory if e.type != kind)
        entry = InventoryEntry(kind, version or 0, 0, image.size)
        self.state = DaemonState((*others, entry), self.state.last_run, self.state.runs)
