"""``mcu-updater doctor``: checks the gateway for what users trip over, one line per check with the fix.

Checks: the configuration; the serial port exists and is a PL011 (not the Raspberry Pi's mini-UART, whose
baud rate follows the core clock); no kernel console and no getty on it; no other process holds it; the
RTS/CTS overlay when flow control is on (Raspberry Pi); the service user and the current user in
``dialout`` and ``gpio``; the GPIO chips present and group-accessible; the configured lines found by name
and free; the firmware packages valid; the configuration and key readable by the service user.

Exit status: 0 when nothing FAILs (OK, WARN and SKIP lines only), 1 when any check FAILs (64 for a bad
command line, 70 for a bug, as for every command). Every probe reads the system through ``Host``, whose
root directories (/proc, /sys, /dev, /boot, /etc) and GPIO backend tests point at a fake tree.
"""

from __future__ import annotations

import argparse
import enum
import json
import os
import pwd
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from mcu_updater.errors import McuUpdaterError

# The parser is built for every command: the configuration, GPIO, serial and package modules are imported
# only when the doctor runs, so `flash` stays light.
if TYPE_CHECKING:
    from mcu_updater.config import Config
    from mcu_updater.hw.gpio import GpioBackend

EXIT_FAIL: Final = 1
SERVICE_USER: Final = "mcu-updater"
SERVICE: Final = "mcu-updater"
# Linux driver names: the PL011 ("uart-pl011", "uart-pl011-axi") and the Raspberry Pi mini-UART.
PL011_DRIVER: Final = re.compile(r"pl011")
MINI_UART_DRIVER: Final = re.compile(r"bcm2835-aux|aux-uart")
RTS_CTS_OVERLAYS: Final = ("uart0", "uart0-pi5")


class Level(enum.StrEnum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass(frozen=True)
class Finding:
    check: str
    level: Level
    detail: str
    fix: str = ""

    def line(self) -> str:
        fix = f" -> fix: {self.fix}" if self.fix else ""
        return f"{self.level.value:<5} {self.check:<10} {self.detail}{fix}"


def _current_user() -> str:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return str(os.getuid())


@dataclass(frozen=True)
class Host:
    """Where the probes look: the real system by default."""

    proc: Path = Path("/proc")
    sys: Path = Path("/sys")
    dev: Path = Path("/dev")
    boot: Path = Path("/boot")
    etc: Path = Path("/etc")
    user: str = field(default_factory=_current_user)
    gpio: Callable[[], GpioBackend] | None = None
    """Opens the GPIO backend; None: the real libgpiod bindings."""

    def device(self, path: str) -> Path:
        """A /dev path as seen under ``dev``."""
        return self.dev / path.removeprefix("/dev/") if path.startswith("/dev/") else Path(path)

    def groups(self) -> dict[str, tuple[int, set[str]]]:
        """Group name -> (gid, members), with users whose primary group it is."""
        found: dict[str, tuple[int, set[str]]] = {}
        for fields in _colon_file(self.etc / "group"):
            if len(fields) >= 4 and fields[2].isdigit():
                found[fields[0]] = (int(fields[2]), {m for m in fields[3].split(",") if m})
        by_gid = {gid: name for name, (gid, _) in found.items()}
        for fields in _colon_file(self.etc / "passwd"):
            if len(fields) >= 4 and fields[3].isdigit() and int(fields[3]) in by_gid:
                found[by_gid[int(fields[3])]][1].add(fields[0])
        return found

    def users(self) -> set[str]:
        return {fields[0] for fields in _colon_file(self.etc / "passwd") if fields}


def _colon_file(path: Path) -> list[list[str]]:
    try:
        return [line.split(":") for line in path.read_text().splitlines() if line and line[0] != "#"]
    except OSError:
        return []


def _read(path: Path) -> str:
    try:
        return path.read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


# --- the checks --------------------------------------------------------------------------------------


@dataclass
class _Doctor:
    host: Host
    config_path: Path
    findings: list[Finding] = field(default_factory=list)

    def add(self, check: str, level: Level, detail: str, fix: str = "") -> None:
        self.findings.append(Finding(check, level, detail, fix))

    def run(self) -> list[Finding]:
        config = self.check_config()
        port = config.serial.port if config else _raw_port(self.config_path)
        if port is None:
            self.add("port", Level.SKIP, "no serial.port to check (the configuration is not readable)")
        else:
            self.check_port(port, config.serial.flow_control if config else None)
        self.check_groups()
        if config is not None:
            self.check_gpio(config)
            self.check_firmware(config)
            self.check_readable(config)
        return self.findings

    # --- configuration ---

    def check_config(self) -> Config | None:
        from mcu_updater.config import load_config  # noqa: PLC0415

        try:
            config = load_config(self.config_path)
        except McuUpdaterError as error:
            self.add(
                "config",
                Level.FAIL,
                error.message,
                error.hint or f"mcu-updater check-config {self.config_path}",
            )
            return None
        self.add("config", Level.OK, f"{self.config_path} is valid")
        return config

    # --- serial port ---

    def check_port(self, port: str, flow_control: bool | None) -> None:
        device = self.host.device(port)
        if not device.exists():
            self.add(
                "port",
                Level.FAIL,
                f"{port} does not exist",
                "enable the UART (enable_uart=1 in config.txt on a Raspberry Pi) or set serial.port to the "
                "real device",
            )
            return
        tty = Path(os.path.realpath(device)).name
        names = {tty, Path(port).name}
        self.check_uart_kind(port, tty)
        self.check_console(port, names)
        self.check_getty(names, tty)
        self.check_holders(port, device)
        if flow_control is not None:
            self.check_flow_control(flow_control)

    def check_uart_kind(self, port: str, tty: str) -> None:
        shown = port if Path(port).name == tty else f"{port} -> {tty}"
        driver_link = self.host.sys / "class" / "tty" / tty / "device" / "driver"
        driver = Path(os.path.realpath(driver_link)).name if os.path.lexists(driver_link) else ""
        if PL011_DRIVER.search(driver):
            self.add("uart", Level.OK, f"{shown} is a PL011 UART (driver {driver})")
        elif MINI_UART_DRIVER.search(driver) or (not driver and tty.startswith("ttyS") and self.is_pi()):
            self.add(
                "uart",
                Level.FAIL,
                f"{shown} is the mini-UART, whose baud rate follows the core clock",
                "add dtoverlay=disable-bt (or miniuart-bt) to config.txt so /dev/serial0 is the PL011 "
                "(ttyAMA0), then reboot",
            )
        elif driver:
            self.add("uart", Level.OK, f"{shown} is driven by {driver}")
        else:
            self.add(
                "uart", Level.WARN, f"cannot tell which UART {shown} is (no driver in {driver_link.parent})"
            )

    def check_console(self, port: str, names: set[str]) -> None:
        consoles = [arg for arg in _read(self.host.proc / "cmdline").split() if arg.startswith("console=")]
        on_port = [arg for arg in consoles if arg.removeprefix("console=").split(",")[0] in names]
        if on_port:
            self.add(
                "console",
                Level.FAIL,
                f"the kernel console is on {port} ({' '.join(on_port)} in /proc/cmdline)",
                f"remove {' '.join(on_port)} from {self.boot_file('cmdline.txt')} (raspi-config: Serial "
                "Port, login shell no) and reboot",
            )
        else:
            self.add("console", Level.OK, f"no kernel console on {port}")

    def check_getty(self, names: set[str], tty: str) -> None:
        wanted = names | {f"/dev/{name}" for name in names}
        for pid, argv in self.processes():
            if argv and Path(argv[0]).name.endswith("getty") and wanted & set(argv[1:]):
                self.add(
                    "getty",
                    Level.FAIL,
                    f"a login prompt runs on {tty} ({Path(argv[0]).name}, pid {pid})",
                    f"systemctl disable --now serial-getty@{tty}.service",
                )
                return
        self.add("getty", Level.OK, f"no getty on {tty}")

    def check_holders(self, port: str, device: Path) -> None:
        # Imported here: it loads pyserial, which only the port checks need.
        from mcu_updater.hw.serial import port_holders  # noqa: PLC0415

        holders = port_holders(str(device), self.host.proc)
        if not holders:
            self.add("port", Level.OK, f"{port} exists and no process holds it")
        elif all(holder.startswith(f"{SERVICE} ") for holder in holders):
            self.add("port", Level.OK, f"{port} is open by the mcu-updater service ({', '.join(holders)})")
        else:
            self.add(
                "port",
                Level.FAIL,
                f"{port} is held by {', '.join(holders)}",
                "stop that program (a serial console, ModemManager, another mcu-updater)",
            )

    def check_flow_control(self, flow_control: bool) -> None:
        if not flow_control:
            self.add(
                "rts-cts",
                Level.WARN,
                "serial.flow_control is false: writes are paced with PRN 1, and a stock SDK bootloader "
                "built with RTS/CTS loses bytes",
                "wire RTS/CTS and set flow_control: true unless the bootloader is built without it",
            )
            return
        if not self.is_pi():
            self.add("rts-cts", Level.SKIP, "not a Raspberry Pi: make sure the UART's RTS and CTS are wired")
            return
        config_txt = self.boot_file("config.txt")
        overlays = [
            line.split("=", 1)[1].strip() for line in self.config_txt_lines() if line.startswith("dtoverlay=")
        ]
        for overlay in overlays:
            name, *params = [part.strip() for part in overlay.split(",")]
            if name == "uart0-ctsrts" or (name in RTS_CTS_OVERLAYS and "ctsrts" in params):
                self.add("rts-cts", Level.OK, f"dtoverlay={overlay} in {config_txt}")
                return
        self.add(
            "rts-cts",
            Level.FAIL,
            f"flow_control is true but {config_txt} enables no RTS/CTS on the UART",
            f"add dtoverlay=uart0,ctsrts to {config_txt} (CTS GPIO16, RTS GPIO17) and reboot",
        )

    # --- users and groups ---

    def check_groups(self) -> None:
        groups = self.host.groups()
        missing = [name for name in ("dialout", "gpio") if name not in groups]
        if missing:
            self.add(
                "groups",
                Level.FAIL,
                f"group {' and '.join(missing)} does not exist (the unit's SupplementaryGroups= needs it)",
                "groupadd --system gpio and install contrib/99-mcu-updater.rules (contrib/install.sh "
                "does both)",
            )
            return
        users = [(SERVICE_USER, "service user")] if SERVICE_USER in self.host.users() else []
        if not users:
            self.add(
                "groups",
                Level.OK,
                f"dialout and gpio exist (no {SERVICE_USER} user: the unit's DynamicUser gets them through "
                "SupplementaryGroups=)",
            )
        if self.host.user not in ("root", SERVICE_USER):
            users.append((self.host.user, "you"))
        for user, who in users:
            lacking = [name for name in ("dialout", "gpio") if user not in groups[name][1]]
            if not lacking:
                self.add("groups", Level.OK, f"{user} ({who}) is in dialout and gpio")
            else:
                level = Level.FAIL if user == SERVICE_USER else Level.WARN
                self.add(
                    "groups",
                    level,
                    f"{user} ({who}) is not in {' and '.join(lacking)}",
                    f"usermod -aG {','.join(lacking)} {user}" + (" and log in again" if who == "you" else ""),
                )

    # --- GPIO ---

    def check_gpio(self, config: Config) -> None:
        from mcu_updater.hw.specs import Backend  # noqa: PLC0415

        backend = config.gpio.backend
        if backend is not Backend.GPIOD:
            self.add("gpio", Level.SKIP, f"gpio.backend is {backend}: no GPIO lines to check")
            return
        chips = sorted(self.host.dev.glob("gpiochip*"), key=lambda path: (len(path.name), path.name))
        if not chips:
            self.add(
                "gpiochip",
                Level.FAIL,
                f"no GPIO chips ({self.host.dev}/gpiochip* is missing)",
                "a kernel with GPIO character devices and the board's GPIO driver is needed; on a "
                "Raspberry Pi that is the stock kernel",
            )
            return
        self.check_chip_access(chips)
        from mcu_updater.hw.gpio import LibGpiod  # noqa: PLC0415

        try:
            gpio = (self.host.gpio or LibGpiod)()
        except McuUpdaterError as error:
            self.add("gpio", Level.FAIL, error.message, error.hint)
            return
        wanted: list[tuple[str, str, str | int]] = [
            ("reset", config.gpio.reset.chip, config.gpio.reset.line),
            ("dfu", config.gpio.dfu.chip, config.gpio.dfu.line),
        ]
        if config.button is not None:
            wanted.append(("button", config.button.chip, config.button.line))
        for role, chip, line in wanted:
            self.check_line(gpio, role, chip, line)

    def check_chip_access(self, chips: list[Path]) -> None:
        names = {gid: name for name, (gid, _) in self.host.groups().items()}
        closed = []
        for chip in chips:
            info = chip.stat()
            if names.get(info.st_gid) != "gpio" or info.st_mode & 0o060 != 0o060:
                closed.append(
                    f"{chip.name} ({names.get(info.st_gid, info.st_gid)}, {stat.filemode(info.st_mode)})"
                )
        if closed:
            self.add(
                "gpiochip",
                Level.WARN,
                f"not read-write for group gpio: {', '.join(closed)}",
                "install contrib/99-mcu-updater.rules into /etc/udev/rules.d and run udevadm trigger",
            )
        else:
            self.add(
                "gpiochip", Level.OK, f"{', '.join(chip.name for chip in chips)} read-write for group gpio"
            )

    def check_line(self, gpio: GpioBackend, role: str, chip: str, line: str | int) -> None:
        from mcu_updater.hw.gpio import line_info  # noqa: PLC0415

        try:
            where, info = line_info(gpio, role, chip, line)
        except McuUpdaterError as error:
            self.add(role, Level.FAIL, error.message, error.hint)
            return
        shown = f"{line} (offset {info.offset}) on {where}"
        if info.used and info.consumer != SERVICE:
            holder = f"{info.consumer!r}" if info.consumer else "another program or a kernel driver"
            self.add(role, Level.FAIL, f"{shown} is in use by {holder}", "stop it, or wire another line")
        else:
            held = " (held by the mcu-updater service)" if info.used else ", free"
            self.add(role, Level.OK, f"{shown}{held}")

    # --- firmware and files ---

    def check_firmware(self, config: Config) -> None:
        # Imported here: packages pull in the protobuf and (with a key) cryptography libraries.
        from mcu_updater.dfu.keys import load_public_key  # noqa: PLC0415
        from mcu_updater.dfu.package import load_package  # noqa: PLC0415
        from mcu_updater.service import firmware_files  # noqa: PLC0415

        try:
            files = firmware_files(config)
            key = load_public_key(config.target.public_key) if config.target.public_key else None
        except McuUpdaterError as error:
            self.add("firmware", Level.FAIL, error.message, error.hint)
            return
        if not files:
            self.add(
                "firmware",
                Level.OK,
                "firmware: applied; no package applied yet (the OTA engine's `mcu-updater apply` brings it)",
            )
            return
        valid = []
        for path in files:
            try:
                package = load_package(
                    path,
                    public_key=key,
                    require_signature=config.policy.require_signature,
                    hw_version=config.target.hw_version,
                )
            except McuUpdaterError as error:
                self.add("firmware", Level.FAIL, f"{path}: {error.message}", error.hint)
                continue
            images = ", ".join(
                image.name if image.version is None else f"{image.name} {image.version}"
                for image in package.images
            )
            valid.append(f"{path.name} ({images})")
        if valid:
            self.add("firmware", Level.OK, f"valid: {'; '.join(valid)}")

    def check_readable(self, config: Config) -> None:
        for what, path in (("configuration", self.config_path), ("public key", config.target.public_key)):
            if path is None:
                continue
            mode = path.stat().st_mode
            if mode & stat.S_IROTH:
                self.add("readable", Level.OK, f"the {what} {path} is readable by the service")
            else:
                self.add(
                    "readable",
                    Level.FAIL,
                    f"the {what} {path} is not world-readable ({stat.filemode(mode)}): the service user "
                    "cannot read it",
                    f"chmod 0644 {path}",
                )

    # --- helpers ---

    def is_pi(self) -> bool:
        model = _read(self.host.proc / "device-tree" / "model") or _read(
            self.host.sys / "firmware" / "devicetree" / "base" / "model"
        )
        return "Raspberry Pi" in model

    def boot_file(self, name: str) -> Path:
        """Raspberry Pi OS Bookworm keeps the boot files in /boot/firmware, older releases in /boot."""
        firmware = self.host.boot / "firmware"
        return firmware / name if firmware.is_dir() else self.host.boot / name

    def config_txt_lines(self) -> list[str]:
        text = _read(self.boot_file("config.txt"))
        return [line.split("#", 1)[0].strip() for line in text.splitlines()]

    def processes(self) -> Iterator[tuple[str, list[str]]]:
        try:
            pids = [entry for entry in self.host.proc.iterdir() if entry.name.isdigit()]
        except OSError:
            return
        for pid in pids:
            try:
                raw = (pid / "cmdline").read_bytes()
            except OSError:
                continue
            yield pid.name, [arg.decode(errors="replace") for arg in raw.split(b"\0") if arg]


def _raw_port(path: Path) -> str | None:
    """serial.port from a configuration that does not validate, so the port checks still run."""
    import yaml  # noqa: PLC0415

    try:
        document = yaml.safe_load(path.read_text())
        port = document["serial"]["port"]
    except (OSError, UnicodeDecodeError, yaml.YAMLError, TypeError, KeyError):
        return None
    return port if isinstance(port, str) else None


def diagnose(config_path: Path, host: Host | None = None) -> list[Finding]:
    """Every check's finding, in the order printed."""
    return _Doctor(host or Host(), config_path).run()


def exit_code(findings: list[Finding]) -> int:
    return EXIT_FAIL if any(finding.level is Level.FAIL for finding in findings) else 0


# --- the command ---------------------------------------------------------------------------------------


def add_doctor_parser(commands: argparse._SubParsersAction[Any]) -> None:
    doctor = commands.add_parser(
        "doctor",
        help="check the gateway (UART, console, getty, RTS/CTS, groups, GPIO, firmware) and print fixes",
        description="One line per check: OK, WARN, FAIL (with the fix) or SKIP. Exit 0 when nothing "
        "fails, 1 when a check fails.",
    )
    doctor.add_argument(
        "--config", type=Path, help="configuration file (default /etc/mcu-updater/mcu-updater.yaml)"
    )
    doctor.add_argument("--json", action="store_true", help="one JSON object: result and checks")


def run_doctor(args: argparse.Namespace, host: Host | None = None) -> int:
    from mcu_updater.config import DEFAULT_PATH  # noqa: PLC0415

    findings = diagnose(args.config or DEFAULT_PATH, host)
    code = exit_code(findings)
    if args.json:
        result = "fail" if code else ("warn" if any(f.level is Level.WARN for f in findings) else "ok")
        print(json.dumps({"result": result, "checks": [asdict(finding) for finding in findings]}))
    else:
        for finding in findings:
            print(finding.line())
        counts = {level: sum(f.level is level for f in findings) for level in Level}
        print("doctor: " + ", ".join(f"{count} {level.value}" for level, count in counts.items() if count))
    return code
