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
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final, TypeVar

import structlog

from mcu_updater import logs
from mcu_updater.console import event_json
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
from mcu_updater.jobs import (
    EXIT_DIFFERS,
    Emit,
    Job,
    JobKind,
    differences,
    error_result,
    installed_versions,
    result_event,
)
from mcu_updater.lock import LOCK_NAME, RunLock
from mcu_updater.metrics import write_metrics
from mcu_updater.notify import Notifier
from mcu_updater.state import DaemonState, InventoryEntry, PackageStore, RunRecord, StateStore
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
    refuse_downgrades,
)
from mcu_updater.watch import DEFAULT_DEBOUNCE, DirectoryWatch, Watched

RETRYABLE: Final = (TransientError, ProtocolError, LinkError, TargetNotAnsweringError)
BACKOFF: Final = (1.0, 3.0, 10.0)
# How long systemd should wait for READY=1 after start: every image at a slow line rate, plus retries.
STARTUP_BUDGET: Final = 600.0
NOTHING_APPLIED: Final = "nothing-applied"
IMAGE_ORDER: Final = (FwType.SOFTDEVICE_BOOTLOADER, FwType.SOFTDEVICE, FwType.BOOTLOADER, FwType.APPLICATION)

log = structlog.get_logger("mcu_updater.daemon")
T = TypeVar("T")


def _ignore(_: dict[str, Any]) -> None:
    """The emit of the daemon's own runs: nobody streams them."""


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

    load_firmware: Callable[[], DfuPackage | None]
    """The images the gateway ships; None when there is nothing to bring the nRF52 to yet
    (``firmware: applied`` before the first `apply`)."""
    connect: Connector
    options: Options
    load_package: Callable[[Path], DfuPackage] | None = None
    """Validates a job's package as the configuration says (key, signatures, hw_version)."""
    metrics_dir: Path | None = None
    """node_exporter's textfile directory, rewritten after every run; None: no metrics."""
    watch: tuple[Watched, ...] = ()
    """Firmware packages whose change (inotify) starts a run."""
    watch_debounce: float = DEFAULT_DEBOUNCE
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
        control_group: str | None = None,
    ) -> None:
        self.settings = settings
        self.lines = lines
        self.target = target
        self.store = StateStore(state_dir)
        self.packages = PackageStore(state_dir)
        self.lock = RunLock(runtime_dir / LOCK_NAME)
        self.control = ControlServer(
            runtime_dir / SOCKET_NAME,
            {"trigger": self._trigger_command, "status": self._status_command},
            streams={"job": self._job_command},
            group=control_group,
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
        self._turn = asyncio.Lock()
        """Runs and jobs inside this process take turns, in arrival order (the run lock is for others)."""
        self._job_tasks: set[asyncio.Task[Any]] = set()
        self._watch: DirectoryWatch | None = None
        self._progress = logs.ProgressGate()
        self._bytes_sent = 0

    # --- requests -----------------------------------------------------------------------------

    def trigger(self, reason: str = "request") -> None:
        """Ask for a run; during a run this queues exactly one more."""
        log.info("update check requested", reason=reason, queued=self.running)
        self._wanted.set()

    async def _trigger_command(self) -> dict[str, Any]:
        queued = self.running
        self.trigger("control socket")
        return {"queued": queued, "running": self.running}

    @property
    def jobs(self) -> int:
        """Jobs from `apply`/`verify` running or waiting for their turn."""
        return len(self._job_tasks)

    async def _status_command(self) -> dict[str, Any]:
        return {"phase": self.phase, "running": self.running, "jobs": self.jobs, **self.state.to_json()}

    async def _job_command(
        self, request: dict[str, Any], emit: Emit, caller_gone: Callable[[], bool]
    ) -> dict[str, Any]:
        """A job from `apply` or `verify`: it waits for the current run, never runs beside it.

        A job whose caller went away before its turn is dropped: that caller may have given up on a
        daemon that answered late and done the job itself.
        """
        try:
            job = Job.from_request(request)
        except McuUpdaterError as error:
            return error_result(error, self._installed())
        task = asyncio.current_task()
        assert task is not None
        self._job_tasks.add(task)
        try:
            emit({"event": "accepted", "kind": job.kind.value, "queued": self._turn.locked()})
            log.info(f"{job.kind.value} job received", package=job.source, queued=self._turn.locked())
            async with self._turn:
                if caller_gone():
                    log.warning(f"{job.kind.value} job dropped: its caller went away", package=job.source)
                    return error_result(TransientError("the caller went away"), self._installed())
                return await self.run_job(job, emit)
        finally:
            self._job_tasks.discard(task)

    def stop(self) -> None:
        log.info("stop requested")
        self._stopping.set()
        for task in (self._run_task, *self._job_tasks):
            if task is not None:
                task.cancel()

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
        self._watch_firmware()
        self.trigger("reload")

    def _watch_firmware(self) -> None:
        """(Re)start the inotify watch if the watched packages are not those of the settings."""
        settings = self.settings
        if self._watch is not None:
            if (self._watch.watched, self._watch.debounce) == (settings.watch, settings.watch_debounce):
                return
            self._watch.close()
            self._watch = None
        if settings.watch:
            self._watch = DirectoryWatch(settings.watch, self.trigger, debounce=settings.watch_debounce)
            self._watch.start()

    # --- the service --------------------------------------------------------------------------

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        signals = {signal.SIGTERM: self.stop, signal.SIGINT: self.stop, signal.SIGHUP: self._reload}
        for signum, handler in signals.items():
            loop.add_signal_handler(signum, handler)
        watchdog = asyncio.create_task(self.notifier.run_watchdog(), name="watchdog")
        try:
            await self.control.start()
            self._watch_firmware()
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
                self._run_task = asyncio.create_task(self._locked_run(), name="update-run")
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
            if self._watch is not None:
                self._watch.close()
            await self.control.close()
            await asyncio.gather(*self._job_tasks, return_exceptions=True)
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

    def _waiting(self, text: str) -> None:
        log.info(text)
        self._set_phase("waiting for another run to finish")

    async def _locked_run(self) -> RunRecord:
        async with self._turn, self.lock.held(on_wait=self._waiting):
            return await self._run()

    async def _run(
        self,
        package: DfuPackage | None = None,
        settings: DaemonSettings | None = None,
        emit: Emit = _ignore,
        source: str = "",
    ) -> RunRecord:
        """One update run (the caller holds the run lock): the shipped firmware, or a job's package."""
        self.running = True
        self._bytes_sent = 0
        began = time.monotonic()
        started = _now()
        log.info("update run started", message_id=logs.RUN_STARTED, phase="start", package=source or None)
        record = RunRecord("failed", started, started, error="interrupted", exit_code=75)
        try:
            record = await self._attempts(started, package, settings or self.settings, emit)
        except asyncio.CancelledError:
            record = RunRecord(
                "failed",
                started,
                _now(),
                error="stopped during the run",
                hint="the next start resumes it",
                exit_code=75,
            )
            raise
        except McuUpdaterError as error:
            rejected = error if isinstance(error, DeviceRejectedError) else None
            record = RunRecord(
                "failed",
                started,
                _now(),
                error=error.message,
                hint=error.hint,
                exit_code=error.exit_code,
                device_code=code_label(rejected.result, rejected.ext) if rejected else "",
                device_result=rejected.result if rejected else None,
                device_ext=rejected.ext if rejected else None,
            )
        finally:
            await self._return_target()
            record = replace(
                record,
                seconds=round(time.monotonic() - began, 3),
                bytes_sent=self._bytes_sent,
                package=source,
            )
            self._finish(record)
        return record

    async def _return_target(self) -> None:
        self._set_phase("returning the target to its application")
        try:
            await self.target.return_to_app()
        except McuUpdaterError as error:
            log.error("could not return the target to its application", error=error.message)

    # --- jobs from OTA engines (`mcu-updater apply`, `verify`) ------------------------------------

    async def run_job(self, job: Job, emit: Emit, *, lock_timeout: float | None = None) -> dict[str, Any]:
        """Run ``job`` under the run lock, stream its events to ``emit``, return its result event."""

        def waiting(text: str) -> None:
            emit({"event": "waiting", "message": text})
            self._waiting(text)

        try:
            async with self.lock.held(on_wait=waiting, wait_limit=lock_timeout):
                return await self._job(job, emit)
        except McuUpdaterError as error:
            return error_result(error, self._installed())

    async def _job(self, job: Job, emit: Emit) -> dict[str, Any]:
        settings = self.settings
        if settings.load_package is None:
            raise ConfigError("this daemon takes no jobs", "run it from a configuration file")
        staged = await asyncio.to_thread(self.packages.stage, job.data)
        try:
            package = await asyncio.to_thread(settings.load_package, staged)
            if job.allow_downgrade:
                settings = replace(settings, options=replace(settings.options, allow_downgrade=True))
            if job.kind is JobKind.VERIFY or job.dry_run:
                return await self._inspect(job, package, settings, emit)
            record = await self._run(package, settings, emit, source=job.source)
            kept = record.result != "failed" and await asyncio.to_thread(self.packages.keep, staged)
        finally:
            self.packages.discard(staged)
        if record.result == "failed":
            message = record.error
        elif record.sent:
            message = f"updated: {', '.join(record.sent)}"
        else:
            message = "already installed: nothing to send"
        return result_event(
            record.exit_code,
            message,
            self._installed(),
            hint=record.hint,
            device_result=record.device_result,
            device_ext=record.device_ext,
            result=record.result,
            sent=list(record.sent),
            seconds=record.seconds,
            bytes_sent=record.bytes_sent,
            package_kept=kept,
        )

    async def _inspect(
        self, job: Job, package: DfuPackage, settings: DaemonSettings, emit: Emit
    ) -> dict[str, Any]:
        """`verify` and `apply --dry-run`: read the device's inventory and compare or plan; send nothing."""
        self.running = True
        try:
            inventory = await self._retrying(settings, lambda: self._read_device(settings, emit), emit)
        finally:
            await self._return_target()
            self.running = False
            self._save_state()
            self._set_phase(f"idle; {self._inventory_text()}")
        if job.kind is JobKind.VERIFY:
            found = differences(package, inventory)
            if found:
                return result_event(
                    EXIT_DIFFERS,
                    "; ".join(found),
                    self._installed(),
                    hint="run `mcu-updater apply` with this package",
                    differences=found,
                )
            labels = ", ".join(image.label for image in package.images)
            return result_event(0, f"the device runs exactly {labels}", self._installed())
        items = plan(package, inventory)
        self._relay(Planned(items), emit)
        if not settings.options.allow_downgrade:
            refuse_downgrades(items, inventory)
        to_send = [item.image.name for item in items if item.action is not Action.SKIP]
        message = f"dry run: would send {', '.join(to_send)}" if to_send else "dry run: nothing to send"
        return result_event(0, message, self._installed(), result="dry-run", would_send=to_send)

    async def _read_device(self, settings: DaemonSettings, emit: Emit) -> Inventory:
        self._set_phase("entering the bootloader")
        await self.target.enter_bootloader()
        client = await settings.connect()
        try:
            await client.wait_ready()
            inventory = await read_inventory(client)
        finally:
            await client.link.close()
        self._relay(InventoryRead(inventory), emit)
        return inventory

    def _installed(self) -> dict[str, int]:
        return installed_versions(self.state.inventory)

    def _finish(self, record: RunRecord) -> None:
        self.running = False
        self.state = DaemonState(self.state.inventory, record, self.state.runs + 1)
        self._save_state()
        if self.settings.metrics_dir is not None:
            try:
                write_metrics(self.settings.metrics_dir, self.state)
            except McuUpdaterError as error:
                log.error("could not write the metrics", error=error.message, hint=error.hint)
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

    def _save_state(self) -> None:
        try:
            self.store.save(self.state)
        except McuUpdaterError as error:
            log.error("could not save the state", error=error.message, hint=error.hint)

    def _inventory_text(self) -> str:
        return ", ".join(f"{e.type} {e.version}" for e in self.state.inventory) or "inventory unknown"

    async def _attempts(
        self, started: str, package: DfuPackage | None, settings: DaemonSettings, emit: Emit
    ) -> RunRecord:
        if package is None:
            package = await asyncio.to_thread(settings.load_firmware)
        if package is None:
            log.info("no package has been applied yet; the nRF52 is left as it is")
            return RunRecord(NOTHING_APPLIED, started, _now())
        chosen = package
        # Images sent by every attempt: one that installed an image and then failed (say, while
        # confirming it) leaves the next attempt nothing to send, and the run still updated it.
        sent: list[str] = []
        await self._retrying(settings, lambda: self._session(chosen, settings, emit, sent), emit)
        result = "updated" if sent else "up-to-date"
        return RunRecord(result, started, _now(), sent=tuple(dict.fromkeys(sent)))

    async def _retrying(
        self, settings: DaemonSettings, operation: Callable[[], Awaitable[T]], emit: Emit
    ) -> T:
        """Run ``operation`` again after transient failures, with backoff; refusals are final."""
        for attempt in range(settings.retries + 1):
            try:
                return await operation()
            except RETRYABLE as error:
                if attempt >= settings.retries or isinstance(error, DeviceRejectedError | PackageError):
                    raise
                delay = self.backoff[min(attempt, len(self.backoff) - 1)]
                log.warning(
                    "transient failure; retrying", error=error.message, retry_in_s=delay, attempt=attempt + 1
                )
                self._set_phase(f"retrying in {delay:.0f} s: {error.message}")
                emit(
                    {
                        "event": "retrying",
                        "message": error.message,
                        "retry_in_s": delay,
                        "attempt": attempt + 1,
                    }
                )
                await asyncio.sleep(delay)
        raise AssertionError("unreachable: the last attempt either returns or raises")

    async def _session(
        self, package: DfuPackage, settings: DaemonSettings, emit: Emit, sent_names: list[str]
    ) -> None:
        """One attempt; appends the name of every image it sends to ``sent_names`` as it goes."""
        self._set_phase("entering the bootloader")
        await self.target.enter_bootloader()
        sent: list[Image] = []
        async for event in UpdateRun(package, settings.connect, settings.options).events():
            self._relay(event, emit)
            if isinstance(event, ImageSent):
                sent.append(event.image)
                sent_names.append(event.image.name)
        if sent and self.target.holds_dfu:
            await self._confirm_activation(settings, package, sent, emit)

    async def _confirm_activation(
        self, settings: DaemonSettings, package: DfuPackage, sent: list[Image], emit: Emit
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
        self._relay(Activated(sent[-1], seconds), emit)
        emit(event_json(InventoryRead(inventory)))
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

    def _relay(self, event: Event, emit: Emit) -> None:
        self._on_event(event)
        emit(event_json(event))

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
            case ImageSent(image=image, seconds=seconds, retries=retries, bytes_resent=resent):
                self._bytes_sent += image.size + resent
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
