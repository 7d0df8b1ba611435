"""``python -m mcu_updater.sim`` / ``mcu-updater simulate`` as a process: first line, summary, exit codes."""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import serial

from mcu_updater.dfu.slip import encode
from mcu_updater.sim.cli import PROFILE_NAMES, add_simulate_parser
from mcu_updater.sim.validation import Profile
from tests.conftest import shared_fixture
from tests.sim.helpers import h, package, serial_request

pytestmark = pytest.mark.timeout(60)

SIM = [sys.executable, "-m", "mcu_updater.sim"]


@contextmanager
def simulator(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    process = subprocess.Popen([*SIM, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("PTY /dev/pts/"), (first, process.stderr.read() if process.stderr else "")
        yield process, first.split()[1]
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=10)


def upload(path: str, dat: bytes, firmware: bytes) -> list[bytes]:
    """A plain pyserial host: ping until the device is up, the init packet, then the firmware."""
    with serial.Serial(path, 1_000_000, timeout=0.2) as port:
        replies = [next(reply for ping in range(20) if (reply := serial_request(port, bytes([0x09, ping]))))]
        replies.append(serial_request(port, b"\x01\x01" + len(dat).to_bytes(4, "little")))
        port.write(b"".join(encode(b"\x08" + dat[i : i + 64]) for i in range(0, len(dat), 64)))
        replies.append(serial_request(port, h("04")))
        for start in range(0, len(firmware), 4096):
            chunk = firmware[start : start + 4096]
            replies.append(serial_request(port, b"\x01\x02" + len(chunk).to_bytes(4, "little")))
            port.write(b"".join(encode(b"\x08" + chunk[i : i + 64]) for i in range(0, len(chunk), 64)))
            replies.append(serial_request(port, h("04")))
    return replies


def test_serves_a_pty_until_sigterm_then_summarises(tmp_path: Path) -> None:
    state, link = tmp_path / "state.json", tmp_path / "ttyNRF"
    (app,) = package("app_v2_signed.zip")
    key = str(shared_fixture("key_a_public.pem"))
    with simulator("--state", str(state), "--baud", "0", "--public-key", key, "--link", str(link)) as (
        process,
        path,
    ):
        assert Path(link).resolve() == Path(path)
        replies = upload(str(link), app.dat, app.bin)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=15)
    assert replies[0][:3] == h("60 09 01")
    assert replies[1:3] == [h("60 01 01"), h("60 04 01")]
    assert set(replies[3:]) == {h("60 01 01"), h("60 04 01")}
    assert process.returncode == 0, err
    digest = hashlib.sha256(app.bin).hexdigest()
    lines = out.splitlines()
    assert f"received application v2, 61440 B, sha256 {digest}" in lines
    assert "reset: dfu-complete; activated application, dfu mode" in lines
    assert any(line.startswith("summary: ") and "1 resets (dfu-complete 1)" in line for line in lines)
    assert f"image: application v2, 61440 B, sha256 {digest}, activated" in lines
    assert "inventory: application v2 at 0x26000, length 61440" in lines
    assert not link.is_symlink()
    assert json.loads(state.read_text())["images"][0]["sha256"] == digest


def test_sigint_also_stops_it(tmp_path: Path) -> None:
    with simulator("--state", str(tmp_path / "s.json"), "--profile", "azure-sample", "--flash-timing") as (
        process,
        _,
    ):
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=15)
    assert process.returncode == 0
    assert "image: none received" in out


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--public-key", "/nonexistent/key.pem"], 66, "does not exist"),
        (["--public-key", str(shared_fixture("key_a.pem"))], 64, "private key"),
        (["--profile", "nope"], 64, "invalid choice"),
        (["--baud", "-1"], 64, "--baud"),
    ],
)
def test_bad_options(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    done = subprocess.run(
        [*SIM, "--state", str(tmp_path / "s.json"), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert (done.returncode, done.stdout) == (code, "")
    assert message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_bad_state_files(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text("{not json")
    for state, code in ((corrupt, 64), (tmp_path / "missing-dir" / "s.json", 74)):
        done = subprocess.run(
            [*SIM, "--state", str(state)], capture_output=True, text=True, timeout=30, check=False
        )
        assert done.returncode == code, done.stderr
        assert str(state) in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1
        assert "Traceback" not in done.stderr


def test_adds_a_simulate_sub_command() -> None:
    parser = argparse.ArgumentParser()
    add_simulate_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["simulate", "--state", "s.json", "--no-flow-control", "--baud", "9600"])
    assert (args.command, args.state, args.baud, args.no_flow_control, args.flash_timing) == (
        "simulate",
        Path("s.json"),
        9600,
        True,
        False,
    )
    assert (args.profile, args.public_key, args.link) == ("sdk", None, None)


def test_profile_names_match_the_profiles() -> None:
    assert tuple(profile.value for profile in Profile) == PROFILE_NAMES
