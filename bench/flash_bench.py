"""Wall time, CPU and peak RSS of `mcu-updater flash` beside nrfutil 6.1.7, on the virtual nRF52.

Run: ``./dev run python bench/flash_bench.py`` (from the repository root; needs ../shared/fixtures and
a Python 3.10 for nrfutil, see tests/nrfutil.py). Prints one table; asserts nothing.

Each row is one whole-process run against a fresh simulator (``mcu-updater simulate``) at 115200 baud:
wall time from process start to exit, user+system CPU seconds and peak RSS from ``wait4``. The
line-rate minimum is the UART time of the exact exchange a serial DFU host must make (init packet,
every object's CREATE/WRITE/CRC/EXECUTE with their replies), 10 bits per byte.

Both tools run as a gateway would have them: installed from a wheel by pip into their own venv, with
compiled bytecode (nrfutil from PyPI; mcu-updater from this checkout into a cached venv refreshed on
every run). The development venv is editable and, where PYTHONDONTWRITEBYTECODE is set, recompiles the
package on every start, which is not what a user's start-up costs.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mcu_updater.dfu import slip  # noqa: E402
from mcu_updater.dfu.package import load_package  # noqa: E402
from mcu_updater.dfu.wire import write_chunk_size  # noqa: E402
from tests.nrfutil import CACHE, nrfutil  # noqa: E402

FIXTURES = ROOT.parent / "shared" / "fixtures"
INSTALLED = CACHE / "bench-venv"
BAUD = 115200
WRITE_CHUNK = write_chunk_size(131)
OBJECT_SIZE = 4096


@dataclass(frozen=True)
class Measurement:
    wall: float
    cpu: float
    max_rss_kib: int
    exit_code: int


def line_rate_minimum(init_packet: bytes, firmware: bytes, baud: int = BAUD) -> float:
    """Seconds of UART time for the serialized exchange of one image (requests and replies)."""

    def framed(payload: bytes) -> int:
        return len(slip.encode(payload))

    total = framed(b"\x06\x01") + framed(bytes(15))  # SELECT command + reply
    total += framed(b"\x01\x01" + bytes(4)) + framed(bytes(3))  # CREATE + reply
    for start in range(0, len(init_packet), WRITE_CHUNK):
        total += framed(b"\x08" + init_packet[start : start + WRITE_CHUNK])
    total += framed(b"\x03") + framed(bytes(11)) + framed(b"\x04") + framed(bytes(3))
    total += framed(b"\x06\x02") + framed(bytes(15))
    for obj in range(0, len(firmware), OBJECT_SIZE):
        total += framed(b"\x01\x02" + bytes(4)) + framed(bytes(3))
        for start in range(obj, min(obj + OBJECT_SIZE, len(firmware)), WRITE_CHUNK):
            total += framed(b"\x08" + firmware[start : min(start + WRITE_CHUNK, obj + OBJECT_SIZE)])
        total += framed(b"\x03") + framed(bytes(11)) + framed(b"\x04") + framed(bytes(3))
    return total * 10 / baud


# Peak RSS via a tiny fork/exec launcher: a child forked from this (large) process would report this
# process's RSS, because Linux keeps the pre-exec high-water mark in ru_maxrss.
LAUNCHER = """
import json, os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.execv(sys.argv[1], sys.argv[1:])
_, status, usage = os.wait4(pid, 0)
print(json.dumps({"wall": time.perf_counter() - started, "cpu": usage.ru_utime + usage.ru_stime,
                  "rss": usage.ru_maxrss, "exit": os.waitstatus_to_exitcode(status)}))
"""


def measure(argv: list[str]) -> Measurement:
    done = subprocess.run(
        [sys.executable, "-S", "-I", "-c", LAUNCHER, *argv], capture_output=True, text=True, check=False
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["exit"]:
        print(f"    ! {Path(argv[0]).name} exited {result['exit']}: {done.stderr[-300:]}", file=sys.stderr)
    return Measurement(result["wall"], result["cpu"], result["rss"], result["exit"])


def install_checkout() -> Path:
    """The `mcu-updater` executable of a non-editable install of this checkout (dependencies stay
    installed between runs; the project itself is rebuilt each time)."""
    pip = INSTALLED / "bin" / "pip"
    if not pip.exists():
        subprocess.run([sys.executable, "-m", "venv", str(INSTALLED)], check=True)
    quiet = ["--quiet", "--disable-pip-version-check"]
    subprocess.run([str(pip), "install", *quiet, str(ROOT)], check=True)
    subprocess.run([str(pip), "install", *quiet, "--no-deps", "--force-reinstall", str(ROOT)], check=True)
    return INSTALLED / "bin" / "mcu-updater"


def launcher_floor_kib() -> int:
    """The launcher's own peak RSS, below which no figure can be read."""
    return measure(["/bin/true"]).max_rss_kib


class Simulator:
    """A fresh `mcu-updater simulate` process on its own pty."""

    def __init__(self, flash_timing: bool, baud: int) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mcu-bench-"))
        argv = [
            str(ROOT / ".venv/bin/mcu-updater"),
            "simulate",
            "--state",
            str(self.dir / "state.json"),
            "--public-key",
            str(FIXTURES / "key_a_public.pem"),
            "--baud",
            str(baud),
        ]
        if flash_timing:
            argv.append("--flash-timing")
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        first = self.process.stdout.readline().split()
        if first[:1] != ["PTY"]:
            raise SystemExit(f"simulator did not print its pty: {first}")
        self.port = first[1]

    def close(self) -> None:
        self.process.terminate()
        self.process.communicate(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass(frozen=True)
class Cell:
    """One benchmark configuration."""

    package: Path
    images: int
    flash_timing: bool
    baud: int


@dataclass(frozen=True)
class Executables:
    mcu_updater: Path
    nrfutil: Path


def run_tool(tool: str, cell: Cell, exes: Executables) -> Measurement:
    sim = Simulator(cell.flash_timing, cell.baud)
    try:
        if tool.startswith("mcu-updater"):
            argv = [str(exes.mcu_updater), "flash", str(cell.package), "--port", sim.port]
            argv += ["--baud", str(BAUD)]
            if tool == VERIFYING:
                argv += ["--public-key", str(FIXTURES / "key_a_public.pem")]
        else:
            # -cd 0: no connect delay. -t is nrfutil's USB-lister wait (it never matches a pty, so it
            # costs the full -t per image) and its ping time: 1 s suffices for one image; a SoftDevice
            # activation needs 3 s.
            argv = [str(exes.nrfutil), "dfu", "serial", "-pkg", str(cell.package), "-p", sim.port]
            argv += ["-b", str(BAUD), "-fc", "0", "-cd", "0", "-t", "1" if cell.images == 1 else "3"]
        return measure(argv)
    finally:
        sim.close()


# nrfutil checks no signature on the host; mcu-updater does when given the key (the verifying row).
VERIFYING = "mcu-updater+key"
TOOLS = ("mcu-updater", VERIFYING, "nrfutil")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell (the fastest is shown)")
    args = parser.parse_args()
    exes = Executables(mcu_updater=install_checkout(), nrfutil=nrfutil())
    packages = [(name, load_package(FIXTURES / name)) for name in ("app_v2_signed.zip", "sd_app_signed.zip")]

    def best(tool: str, cell: Cell) -> Measurement:
        return min((run_tool(tool, cell, exes) for _ in range(args.repeat)), key=lambda m: m.wall)

    print(f"Wall time at {BAUD} baud (the simulator models the line rate; WRITEs of {WRITE_CHUNK} B)")
    header = ("package", "flash timing", "tool", "wall s", "line min s", "wall/min", "exit")
    print("{:20} {:>12} {:>15} {:>8} {:>10} {:>8} {:>4}".format(*header))
    for name, package in packages:
        minimum = sum(line_rate_minimum(i.init_packet, i.firmware) for i in package.images)
        for flash_timing in (False, True):
            for tool in (VERIFYING, "nrfutil"):
                m = best(tool, Cell(FIXTURES / name, len(package.images), flash_timing, BAUD))
                timing = "on" if flash_timing else "off"
                row = (name, timing, tool, m.wall, minimum, m.wall / minimum, m.exit_code)
                print("{:20} {:>12} {:>15} {:8.3f} {:10.3f} {:8.3f} {:4}".format(*row))
    floor = launcher_floor_kib() / 1024
    print(f"\nUnthrottled (instant line and flash in the simulator); launcher RSS floor {floor:.1f} MiB")
    print(
        "{:20} {:>15} {:>8} {:>7} {:>12} {:>4}".format(
            "package", "tool", "wall s", "CPU s", "peak RSS MiB", "exit"
        )
    )
    for name, package in packages:
        for tool in TOOLS:
            m = best(tool, Cell(FIXTURES / name, len(package.images), False, 0))
            figures = (name, tool, m.wall, m.cpu, m.max_rss_kib / 1024, m.exit_code)
            print("{:20} {:>15} {:8.3f} {:7.3f} {:12.1f} {:4}".format(*figures))
    start_up = min((measure(import_floor_argv(exes)) for _ in range(args.repeat)), key=lambda m: m.cpu)
    print(
        f"\nStart-up floor (the interpreter importing asyncio, pyserial-asyncio-fast and protobuf, "
        f"nothing of ours): CPU {start_up.cpu:.3f} s, peak RSS {start_up.max_rss_kib / 1024:.1f} MiB"
    )


def import_floor_argv(exes: Executables) -> list[str]:
    """What any asyncio + protobuf DFU host pays before its first line of code runs."""
    python = exes.mcu_updater.with_name("python")
    imports = "import asyncio, serial_asyncio_fast; from google.protobuf import descriptor_pool"
    return [str(python), "-c", imports]


if __name__ == "__main__":
    main()
