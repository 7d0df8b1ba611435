"""`mcu-updater doctor` on fake Raspberry Pi trees (proc, sys, dev, boot, etc built in tmp_path, GPIO on
the fake libgpiod), and once for real on this machine."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mcu_updater.doctor import Finding, Host, Level, diagnose, run_doctor
from mcu_updater.sim.gpio import FakeChip, FakeGpio
from tests.conftest import shared_fixture

HEADER = "pinctrl-bcm2711"

CONFIG = """\
serial:
  port: /dev/serial0
  flow_control: {flow_control}
gpio:
  chip: {chip}
  reset: {{line: {reset}}}
  dfu: {{line: GPIO6}}
button: {{line: GPIO26}}
target:
  public_key: key.pem
firmware: firmware/
"""


@dataclass
class Pi:
    """A Raspberry Pi 4 set up as docs/raspberry-pi.md says, as files in ``base``."""

    base: Path
    busy: dict[str | int, str] = field(default_factory=dict)
    user: str = "root"

    def __post_init__(self) -> None:
        gid = os.getgid()  # the fake gpio group owns the fake chips without a chown
        self.write(
            "proc/cmdline", "coherent_pool=1M 8250.nr_uarts=0 console=tty1 root=PARTUUID=1-02 rootwait"
        )
        self.write("proc/device-tree/model", "Raspberry Pi 4 Model B Rev 1.4\0")
        self.process(1, ["/sbin/init"], comm="systemd")
        self.process(
            310, ["/sbin/agetty", "-o", "-p -- \\u", "--noclear", "-", "tty1", "linux"], comm="agetty"
        )
        self.write("dev/ttyAMA0", "")
        self.write("dev/ttyS0", "")
        self.link("dev/serial0", "ttyAMA0")
        self.uart("ttyAMA0", "amba", "uart-pl011")
        self.uart("ttyS0", "platform", "bcm2835-aux-uart")
        self.write("dev/gpiochip0", "")
        self.path("dev/gpiochip0").chmod(0o660)
        self.write(
            "boot/firmware/config.txt", "[all]\nenable_uart=1\ndtoverlay=disable-bt\ndtoverlay=uart0,ctsrts\n"
        )
        self.write(
            "etc/group",
            f"root:x:0:\ndialout:x:20:mcu-updater,pi\ngpio:x:{gid}:mcu-updater,pi\nmcu-updater:x:996:\npi:x:1000:\n",
        )
        self.write(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/bash\nmcu-updater:x:997:996::/var/lib/mcu-updater:/usr/sbin/nologin\n"
            "pi:x:1000:1000::/home/pi:/bin/bash\n",
        )
        shutil.copy(shared_fixture("key_a_public.pem"), self.path("gateway/key.pem"))
        self.path("gateway/firmware").mkdir()
        shutil.copy(shared_fixture("app_v2_signed.zip"), self.path("gateway/firmware"))
        self.configure()

    def path(self, relative: str) -> Path:
        path = self.base / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write(self, relative: str, text: str) -> None:
        self.path(relative).write_text(text)

    def link(self, relative: str, target: str) -> None:
        path = self.path(relative)
        if os.path.lexists(path):
            path.unlink()
        path.symlink_to(target)

    def process(self, pid: int, argv: list[str], *, comm: str, fds: tuple[str, ...] = ()) -> None:
        self.write(f"proc/{pid}/cmdline", "\0".join(argv) + "\0")
        self.write(f"proc/{pid}/comm", comm + "\n")
        self.path(f"proc/{pid}/fd").mkdir(exist_ok=True)
        for number, target in enumerate(fds, start=3):
            self.link(f"proc/{pid}/fd/{number}", str(self.base / target))

    def uart(self, tty: str, bus: str, driver: str) -> None:
        self.path(f"sys/bus/{bus}/drivers/{driver}").mkdir(exist_ok=True)
        self.link(f"sys/class/tty/{tty}/device/driver", str(self.base / f"sys/bus/{bus}/drivers/{driver}"))

    def configure(self, *, flow_control: bool = True, chip: str = HEADER, reset: str = "GPIO5") -> None:
        self.write(
            "gateway/mcu-updater.yaml", CONFIG.format(flow_control=flow_control, chip=chip, reset=reset)
        )

    @property
    def config(self) -> Path:
        return self.base / "gateway" / "mcu-updater.yaml"

    def host(self) -> Host:
        gpio = FakeGpio(FakeChip("/dev/gpiochip0", HEADER, [f"GPIO{n}" for n in range(58)], busy=self.busy))
        return Host(
            proc=self.base / "proc",
            sys=self.base / "sys",
            dev=self.base / "dev",
            boot=self.base / "boot",
            etc=self.base / "etc",
            user=self.user,
            gpio=lambda: gpio,
        )

    def diagnose(self) -> list[Finding]:
        return diagnose(self.config, self.host())

    def only(self, check: str, level: Level) -> Finding:
        """The single finding of ``check`` at ``level``; every other finding is OK."""
        findings = self.diagnose()
        matching = [f for f in findings if f.check == check and f.level is level]
        assert len(matching) == 1, findings
        others = [f for f in findings if f.level is not Level.OK and f is not matching[0]]
        assert others == []
        return matching[0]


@pytest.fixture
def pi(tmp_path: Path) -> Pi:
    return Pi(tmp_path)


def test_a_well_set_up_pi_is_all_ok(pi: Pi) -> None:
    findings = pi.diagnose()
    assert [(f.check, f.level) for f in findings] == [
        ("config", Level.OK),
        ("uart", Level.OK),
        ("console", Level.OK),
        ("getty", Level.OK),
        ("port", Level.OK),
        ("rts-cts", Level.OK),
        ("groups", Level.OK),
        ("gpiochip", Level.OK),
        ("reset", Level.OK),
        ("dfu", Level.OK),
        ("button", Level.OK),
        ("firmware", Level.OK),
        ("readable", Level.OK),
        ("readable", Level.OK),
    ]
    details = {f.check: f.detail for f in findings}
    assert details["uart"] == "/dev/serial0 -> ttyAMA0 is a PL011 UART (driver uart-pl011)"
    assert details["rts-cts"] == f"dtoverlay=uart0,ctsrts in {pi.base}/boot/firmware/config.txt"
    assert details["reset"] == f"GPIO5 (offset 5) on /dev/gpiochip0 ({HEADER}), free"
    assert details["firmware"] == "valid: app_v2_signed.zip (application 2)"


def test_mini_uart(pi: Pi) -> None:
    pi.link("dev/serial0", "ttyS0")
    finding = pi.only("uart", Level.FAIL)
    assert finding.detail == "/dev/serial0 -> ttyS0 is the mini-UART, whose baud rate follows the core clock"
    assert "dtoverlay=disable-bt" in finding.fix


def test_serial_console_on_the_port(pi: Pi) -> None:
    pi.write("proc/cmdline", "console=serial0,115200 console=tty1 root=PARTUUID=1-02 rootwait")
    finding = pi.only("console", Level.FAIL)
    assert finding.detail == "the kernel console is on /dev/serial0 (console=serial0,115200 in /proc/cmdline)"
    assert finding.fix.startswith(f"remove console=serial0,115200 from {pi.base}/boot/firmware/cmdline.txt")


def test_getty_on_the_port(pi: Pi) -> None:
    pi.process(
        412,
        ["/sbin/agetty", "-o", "-p -- \\u", "--keep-baud", "115200", "-", "ttyAMA0", "vt220"],
        comm="agetty",
    )
    finding = pi.only("getty", Level.FAIL)
    assert finding.detail == "a login prompt runs on ttyAMA0 (agetty, pid 412)"
    assert finding.fix == "systemctl disable --now serial-getty@ttyAMA0.service"


def test_port_held_by_another_program(pi: Pi) -> None:
    pi.process(977, ["minicom", "-D", "/dev/serial0"], comm="minicom", fds=("dev/ttyAMA0",))
    finding = pi.only("port", Level.FAIL)
    assert finding.detail == "/dev/serial0 is held by minicom (pid 977)"


def test_port_held_by_the_service_is_fine(pi: Pi) -> None:
    pi.process(
        700,
        ["/opt/mcu-updater/venv/bin/python3", "mcu-updater", "run"],
        comm="mcu-updater",
        fds=("dev/serial0",),
    )
    port = [f for f in pi.diagnose() if f.check == "port"]
    assert port == [
        Finding("port", Level.OK, "/dev/serial0 is open by the mcu-updater service (mcu-updater (pid 700))")
    ]


def test_missing_port(pi: Pi) -> None:
    pi.path("dev/serial0").unlink()
    finding = pi.only("port", Level.FAIL)
    assert finding.detail == "/dev/serial0 does not exist"


def test_flow_control_without_the_overlay(pi: Pi) -> None:
    pi.write("boot/firmware/config.txt", "enable_uart=1\ndtoverlay=disable-bt\n# dtoverlay=uart0,ctsrts\n")
    finding = pi.only("rts-cts", Level.FAIL)
    config_txt = pi.base / "boot/firmware/config.txt"
    assert finding.fix == f"add dtoverlay=uart0,ctsrts to {config_txt} (CTS GPIO16, RTS GPIO17) and reboot"


def test_older_firmware_overlay_name_in_boot(pi: Pi) -> None:
    shutil.rmtree(pi.base / "boot" / "firmware")
    pi.write("boot/config.txt", "dtoverlay=uart0-ctsrts\n")
    assert all(f.level is Level.OK for f in pi.diagnose())


def test_flow_control_off_is_a_warning(pi: Pi) -> None:
    pi.configure(flow_control=False)
    assert "PRN 1" in pi.only("rts-cts", Level.WARN).detail


def test_service_user_not_in_gpio(pi: Pi) -> None:
    pi.write("etc/group", f"dialout:x:20:mcu-updater\ngpio:x:{os.getgid()}:\n")
    finding = pi.only("groups", Level.FAIL)
    assert (finding.detail, finding.fix) == (
        "mcu-updater (service user) is not in gpio",
        "usermod -aG gpio mcu-updater",
    )


def test_current_user_not_in_dialout_is_a_warning(pi: Pi) -> None:
    pi.user = "alice"
    finding = pi.only("groups", Level.WARN)
    assert (finding.detail, finding.fix) == (
        "alice (you) is not in dialout and gpio",
        "usermod -aG dialout,gpio alice and log in again",
    )


def test_no_gpio_group(pi: Pi) -> None:
    pi.write("etc/group", "dialout:x:20:\n")
    findings = pi.diagnose()
    groups = [f for f in findings if f.check == "groups"]
    assert groups == [
        Finding(
            "groups",
            Level.FAIL,
            "group gpio does not exist (the unit's SupplementaryGroups= needs it)",
            "groupadd --system gpio and install contrib/99-mcu-updater.rules (contrib/install.sh does both)",
        )
    ]
    assert [f.level for f in findings if f.check == "gpiochip"] == [Level.WARN]  # the chip's group is unnamed


def test_no_gpio_chips(pi: Pi) -> None:
    pi.path("dev/gpiochip0").unlink()
    finding = pi.only("gpiochip", Level.FAIL)
    assert finding.detail == f"no GPIO chips ({pi.base}/dev/gpiochip* is missing)"


def test_chip_not_group_writable(pi: Pi) -> None:
    pi.path("dev/gpiochip0").chmod(0o600)
    finding = pi.only("gpiochip", Level.WARN)
    assert finding.detail == "not read-write for group gpio: gpiochip0 (gpio, -rw-------)"


def test_line_name_not_on_the_chip(pi: Pi) -> None:
    pi.configure(reset="GPIO99")
    finding = pi.only("reset", Level.FAIL)
    assert finding.detail == f"GPIO chip /dev/gpiochip0 ({HEADER}) has no line named 'GPIO99' for reset"


def test_line_held_by_another_program(pi: Pi) -> None:
    pi.busy = {"GPIO6": "gpioset"}
    finding = pi.only("dfu", Level.FAIL)
    assert finding.detail == f"GPIO6 (offset 6) on /dev/gpiochip0 ({HEADER}) is in use by 'gpioset'"


def test_no_firmware_packages(pi: Pi) -> None:
    (pi.base / "gateway/firmware/app_v2_signed.zip").unlink()
    assert pi.only("firmware", Level.FAIL).detail.startswith("no firmware packages in ")


def test_invalid_and_unsigned_packages_are_named(pi: Pi) -> None:
    firmware = pi.base / "gateway/firmware"
    (firmware / "broken.zip").write_bytes(b"not a zip")
    shutil.copy(shared_fixture("app_v2_unsigned.zip"), firmware)
    findings = pi.diagnose()
    failed = [f.detail for f in findings if f.level is Level.FAIL]
    assert len(failed) == 2, findings
    assert failed[0].startswith(f"{firmware}/app_v2_unsigned.zip: ")
    assert failed[1].startswith(f"{firmware}/broken.zip: ")
    assert [f.detail for f in findings if f.check == "firmware" and f.level is Level.OK] == [
        "valid: app_v2_signed.zip (application 2)"
    ]


def test_key_not_readable_by_the_service(pi: Pi) -> None:
    key = pi.base / "gateway/key.pem"
    key.chmod(0o600)
    finding = pi.only("readable", Level.FAIL)
    assert finding.fix == f"chmod 0644 {key}"


def test_invalid_config_still_checks_the_port(pi: Pi) -> None:
    (pi.base / "gateway/key.pem").unlink()
    pi.write("proc/cmdline", "console=ttyAMA0,115200")
    findings = pi.diagnose()
    assert [(f.check, f.level) for f in findings if f.level is not Level.OK] == [
        ("config", Level.FAIL),
        ("console", Level.FAIL),
    ]
    assert "target.public_key" in findings[0].detail


def test_not_a_pi(pi: Pi) -> None:
    (pi.base / "proc/device-tree/model").unlink()
    assert (
        pi.only("rts-cts", Level.SKIP).detail
        == "not a Raspberry Pi: make sure the UART's RTS and CTS are wired"
    )


def test_json_output_and_exit_code(pi: Pi, capsys: pytest.CaptureFixture[str]) -> None:
    pi.write("proc/cmdline", "console=serial0,115200")
    code = run_doctor(argparse.Namespace(config=pi.config, json=True), pi.host())
    report = json.loads(capsys.readouterr().out)
    assert code == 1
    assert report["result"] == "fail"
    assert {"check": "config", "level": "OK", "detail": f"{pi.config} is valid", "fix": ""} in report[
        "checks"
    ]

    pi.write("proc/cmdline", "console=tty1")
    pi.user = "alice"
    assert run_doctor(argparse.Namespace(config=pi.config, json=False), pi.host()) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "doctor: 14 OK, 1 WARN"
    fix = "usermod -aG dialout,gpio alice and log in again"
    assert f"WARN  groups     alice (you) is not in dialout and gpio -> fix: {fix}" in lines


def test_on_this_machine(pi: Pi) -> None:
    """The real probes on a machine without the hardware: FAILs, exit 1, no traceback."""
    command = [sys.executable, "-m", "mcu_updater", "doctor", "--config", str(pi.config)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[0].startswith("OK    config ")
    assert all(line.split()[0] in {"OK", "WARN", "FAIL", "SKIP"} for line in lines[:-1])
    assert lines[-1].startswith("doctor: ")
    assert "FAIL" in done.stdout
