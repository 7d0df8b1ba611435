"""Build the daemon from its configuration: firmware, serial connector, lines, button (the wiring).

`mcu-updater run` uses the real adapters; the demo passes the virtual nRF52's lines and button and
otherwise runs exactly this code.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Final

from mcu_updater.adapters import serial_connector
from mcu_updater.config import Config, Downgrade, ReadyWhen, load_config
from mcu_updater.daemon import Daemon, DaemonSettings, combine_firmware
from mcu_updater.dfu.package import DfuPackage, load_package
from mcu_updater.errors import ConfigError, InputMissingError
from mcu_updater.hw.button import Button, GpiodButton
from mcu_updater.hw.gpio import TargetLines, open_target_lines
from mcu_updater.hw.specs import Backend, TargetLine
from mcu_updater.notify import Notifier
from mcu_updater.state import PackageStore
from mcu_updater.target import Target
from mcu_updater.updater import Options
from mcu_updater.watch import Watched

PACKAGE_SUFFIX: Final = ".zip"


def firmware_files(config: Config) -> list[Path]:
    """The packages the configuration names: files as given, directories' ``*.zip`` in name order;
    with ``firmware: applied``, the package `apply` kept (none before the first `apply`)."""
    if config.firmware.applied:
        current = PackageStore(config.state_dir).current
        return [current] if current.exists() else []
    files: list[Path] = []
    for path in config.firmware.paths:
        files += sorted(path.glob(f"*{PACKAGE_SUFFIX}")) if path.is_dir() else [path]
    if not files:
        raise InputMissingError(
            f"no firmware packages in {', '.join(map(str, config.firmware.paths))}",
            "install the nrfutil .zip packages the gateway should bring the nRF52 to",
        )
    return files


def watched_firmware(config: Config) -> tuple[Watched, ...]:
    """What inotify watches: each firmware directory's packages, or a listed package's own name.
    Nothing with ``firmware: applied``: `apply` itself is that change, and a second run would only
    reset the nRF52 once more."""
    return tuple(
        Watched(path, f"*{PACKAGE_SUFFIX}") if path.is_dir() else Watched(path.parent, path.name)
        for path in config.firmware.paths
    )


def package_loader(config: Config) -> Callable[[Path], DfuPackage]:
    """Loads a package and validates it as the configuration says (key, signatures, hw_version)."""
    public_key = None
    if config.target.public_key is not None:
        from mcu_updater.dfu.keys import load_public_key  # noqa: PLC0415 - cryptography only with a key

        public_key = load_public_key(config.target.public_key)

    def load(path: Path) -> DfuPackage:
        return load_package(
            path,
            public_key=public_key,
            require_signature=config.policy.require_signature,
            hw_version=config.target.hw_version,
        )

    return load


def load_firmware(config: Config) -> DfuPackage | None:
    """Every shipped package, validated (signatures too when a key is configured), as one image set;
    None with ``firmware: applied`` before the first `apply` (nothing to bring the nRF52 to yet)."""
    load = package_loader(config)
    files = firmware_files(config)
    if config.firmware.applied and not files:
        return None
    return combine_firmware([load(path) for path in files], files[0])


def daemon_settings(config: Config) -> DaemonSettings:
    serial = config.serial
    return DaemonSettings(
        load_firmware=lambda: load_firmware(config),
        connect=serial_connector(serial.port, serial.baud, serial.flow_control, config.timeouts),
        options=Options(
            prn=0 if serial.flow_control else 1,
            flow_control=serial.flow_control,
            hw_version=config.target.hw_version,
            abort_when_idle=True,
            allow_downgrade=config.policy.downgrade is Downgrade.ALLOW,
        ),
        ready_after_first_run=config.notify.ready is ReadyWhen.AFTER_FIRST_RUN,
        load_package=package_loader(config),
        metrics_dir=config.metrics.textfile_dir,
        watch=watched_firmware(config),
    )


def make_daemon(
    config: Config,
    *,
    lines: TargetLines,
    button: Button | None,
    reload: Callable[[], DaemonSettings] | None = None,
    notifier: Notifier | None = None,
) -> Daemon:
    gpio = config.gpio
    return Daemon(
        daemon_settings(config),
        lines=lines,
        target=Target(lines, enter_bootloader=gpio.enter_bootloader, return_to_app=gpio.return_to_app),
        state_dir=config.state_dir,
        runtime_dir=config.runtime_dir,
        notifier=notifier or Notifier(),
        button_start=button.start if button is not None else None,
        reload=reload,
        control_group=config.control.group,
    )


def refuse_virtual_lines(config: Config, config_path: Path) -> None:
    if config.gpio.backend is Backend.VIRTUAL:
        raise ConfigError(
            f"{config_path}: gpio.backend: virtual drives the simulator inside `mcu-updater demo` only",
            "use gpiod (or none) for a real target",
        )


async def run_service(config_path: Path) -> int:
    """`mcu-updater run`: hold the real lines and button for the daemon's life."""
    from mcu_updater import logs  # noqa: PLC0415 - configured once the configuration names the level

    config = load_config(config_path)
    logs.configure_logging(level=config.logging.level.value)
    refuse_virtual_lines(config, config_path)
    # The target stays in reset while the other resources are opened, as the reference solution does.
    lines = open_target_lines(
        config.gpio.backend, config.gpio.reset, config.gpio.dfu, initial={TargetLine.RESET: True}
    )
    button: Button | None = None
    try:
        button = GpiodButton(config.button) if config.button is not None else None
        daemon = make_daemon(
            config, lines=lines, button=button, reload=lambda: daemon_settings(load_config(config_path))
        )
        return await daemon.serve()
    finally:
        if button is not None:
            button.close()
        lines.close()


async def trigger(config_path: Path) -> int:
    """`mcu-updater trigger`: ask the running daemon for an update check now."""
    from mcu_updater.control import SOCKET_NAME, request  # noqa: PLC0415

    config = load_config(config_path)
    reply = await request(config.runtime_dir / SOCKET_NAME, "trigger")
    if not reply.get("ok"):
        raise ConfigError(f"the daemon refused the request: {reply.get('error')}", "check the daemon's log")
    print("update check queued after the current run" if reply.get("queued") else "update check started")
    return 0


async def status(config_path: Path, *, as_json: bool) -> int:
    """`mcu-updater status`: the daemon (if it runs), the target's last inventory and the last run."""
    from mcu_updater.control import SOCKET_NAME, request  # noqa: PLC0415
    from mcu_updater.errors import McuUpdaterError  # noqa: PLC0415
    from mcu_updater.state import PackageStore, StateStore  # noqa: PLC0415

    config = load_config(config_path)
    saved = StateStore(config.state_dir).load().to_json()
    try:
        live = await request(config.runtime_dir / SOCKET_NAME, "status")
    except McuUpdaterError as error:
        live = {"ok": False, "error": error.message}
    daemon = {
        "running": bool(live.get("ok")),
        "phase": live.get("phase"),
        "busy": live.get("running"),
        "jobs": live.get("jobs"),
    }
    report = {**saved, **{k: v for k, v in live.items() if k in saved}, "daemon": daemon}
    report.pop("format", None)
    report["installed"] = {entry["type"]: entry["version"] for entry in report.get("inventory", [])}
    kept = PackageStore(config.state_dir)
    report["packages"] = {
        "current": str(kept.current) if kept.current.is_file() else None,
        "previous": str(kept.previous) if kept.previous.is_file() else None,
    }
    if as_json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"daemon: {'running, ' + str(daemon['phase']) if daemon['running'] else 'not running'}")
    run = report.get("last_run")
    if run:
        sent = f", sent {', '.join(run['sent'])}" if run["sent"] else ""
        failure = f": {run['error']}; {run['hint']}" if run["error"] else ""
        print(f"last run: {run['result']} at {run['finished']}{sent}{failure}")
    else:
        print("last run: none recorded")
    listed = ", ".join(f"{e['type']} {e['version']}" for e in report.get("inventory", []))
    print(f"target: {listed or 'inventory unknown'}")
    return 0
