"""Wall time, CPU and peak RSS of `mcu-updater flash` beside nrfutil 6.1.7, on the virtual nRF52.

Run: ``./dev run python bench/flash_bench.py`` (from the repository root; needs ../shared/fixtures and
a Python 3.10 for nrfutil, see tests/nrfutil.py). Prints one table; asserts nothing.

Each row is one whole-process run against a fresh simulator (``mcu-updater simulate``) at 115200 baud:
wall time from process start to exit, user+system CPU seconds and peak RSS from ``wait4``. The
line-rate minimum is the UART time of the exact exchange a serial DFU host must make (init packet,
every object's CREATE/WRITE/CRC/EXECUTE with their replies), 10 bits per byte.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mcu_updater.dfu import slip  # noqa: E402
from mcu_updater.dfu.package import load_package  # noqa: E402
from mcu_updater.dfu.wire import write_chunk_size  # noqa: E402
from tests.nrfutil import nrfutil  # noqa: E402

FIXTURES = ROOT.parent / "shared" / "fixtures"
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


def measure(argv: list[str]) -> Measurement:
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.stderr is not None:
        error = process.stderr.read().decode(errors="replace").strip()
        process.stderr.close()
        if process.returncode:
            print(f"    ! {argv[0]} exited {process.returncode}: {error[-300:]}", file=sys.stderr)
    return Measurement(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss, process.returncode)


class Simulator:
    """A fresh `mcu-updater simulate` process on its own pty."""

    def __init__(self, flash_timing: bool) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="mcu-bench-"))
        argv = [
            str(ROOT / ".venv/bin/mcu-updater"),
            "simulate",
            "--state",
            str(self.dir / "state.json"),
            "--public-key",
            str(FIXTURES / "key_a_public.pem"),
            "--baud",
            str(BAUD),
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


def run_tool(tool: str, package: Path, flash_timing: bool, nrfutil_exe: Path) -> Measurement:
    sim = Simulator(flash_timing)
    try:
        if tool == "mcu-updater":
            argv = [
                str(ROOT / ".venv/bin/mcu-updater"),
                "flash",
                str(package),
                "--port",
                sim.port,
                "--baud",
                str(BAUD),
                "--public-key",
                str(FIXTURES / "key_a_public.pem"),
            ]
        else:
            # -cd 0: no connect delay; -t 3: what a SoftDevice activation needs (also its USB-lister wait).
            argv = [str(nrfutil_exe), "dfu", "serial", "-pkg", str(package), "-p", sim.port]
            argv += ["-b", str(BAUD), "-fc", "0", "-cd", "0", "-t", "3"]
        return measure(argv)
    finally:
        sim.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell (the best is shown)")
    args = parser.parse_args()
    nrfutil_exe = nrfutil()
    print(
        f"{'package':24} {'flash timing':12} {'tool':12} {'wall s':>8} {'line min s':>10} "
        f"{'wall/min':>8} {'CPU s':>7} {'RSS MiB':>8} {'exit':>4}"
    )
    for name in ("app_v2_signed.zip", "sd_app_signed.zip"):
        package = FIXTURES / name
        loaded = load_package(package)
        minimum = sum(line_rate_minimum(i.init_packet, i.firmware) for i in loaded.images)
        for flash_timing in (False, True):
            for tool in ("mcu-updater", "nrfutil"):
                runs = [run_tool(tool, package, flash_timing, nrfutil_exe) for _ in range(args.repeat)]
                best = min(runs, key=lambda m: m.wall)
                print(
                    f"{name:24} {'on' if flash_timing else 'off':12} {tool:12} {best.wall:8.3f} "
                    f"{minimum:10.3f} {best.wall / minimum:8.3f} {best.cpu:7.3f} "
                    f"{best.max_rss_kib / 1024:8.1f} {best.exit_code:4}"
                )


if __name__ == "__main__":
    main()
