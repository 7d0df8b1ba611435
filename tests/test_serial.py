"""Opening real ports (pty pairs): success, and every failure turned into one line with the fix."""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import sys
import tty
from collections.abc import Iterator

import pytest

from mcu_updater.dfu.link import DfuLink
from mcu_updater.errors import LinkError
from mcu_updater.hw.serial import explain_open_error, open_serial


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, str]]:
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    path = os.ttyname(slave)
    yield master, path
    os.close(slave)
    os.close(master)


async def test_open_exchanges_frames_over_a_real_pty(pty_pair: tuple[int, str]) -> None:
    master, path = pty_pair
    _, link = await open_serial(path, lambda: DfuLink(path))
    assert isinstance(link, DfuLink)
    frames: list[bytes] = []
    link.listen(frames.append, lambda _: None)
    link.send(bytes.fromhex("09 05"))
    await link.drain()
    await asyncio.sleep(0.05)
    assert os.read(master, 64) == bytes.fromhex("09 05 C0")
    os.write(master, bytes.fromhex("60 09 01 05 C0"))
    for _ in range(50):
        if frames:
            break
        await asyncio.sleep(0.01)
    assert frames == [bytes.fromhex("60 09 01 05")]
    await link.close()
    assert not link.is_open


async def test_missing_port_names_the_port() -> None:
    with pytest.raises(LinkError, match="/dev/ttyNOPE0 does not exist") as caught:
        await open_serial("/dev/ttyNOPE0", DfuLink)
    assert caught.value.exit_code == 74
    assert "/dev/serial0" in caught.value.hint


async def test_port_held_by_another_process_names_it(pty_pair: tuple[int, str]) -> None:
    _, path = pty_pair
    holder = subprocess.Popen(  # noqa: ASYNC220 - a short-lived helper; its start blocks for ms
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'rb+', buffering=0); "
            "fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB); print('held', flush=True); time.sleep(30)",
            path,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LinkError, match=rf"held by python\S* \(pid {holder.pid}\)") as caught:
            await open_serial(path, DfuLink)
        assert "getty" in caught.value.hint
    finally:
        holder.kill()
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()


@pytest.mark.parametrize(
    ("code", "phrase", "hint"),
    [
        (errno.EACCES, "no permission", "dialout"),
        (errno.ENOENT, "does not exist", "UART is enabled"),
        (errno.EIO, "cannot open serial port", "cable"),
    ],
)
def test_open_errors_are_explained(code: int, phrase: str, hint: str) -> None:
    error = explain_open_error("/dev/ttyAMA0", OSError(code, os.strerror(code)))
    assert phrase in error.message
    assert hint in error.hint
