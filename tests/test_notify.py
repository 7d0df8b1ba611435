"""sd_notify: the datagrams systemd receives, the watchdog interval and the watchdog task."""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from mcu_updater.notify import Notifier


class NotifySocket:
    """The receiving end systemd binds; ``env`` is what a service would find in its environment."""

    def __init__(self, sock: socket.socket, notify_socket: str) -> None:
        self.sock = sock
        self.env = {"NOTIFY_SOCKET": notify_socket}

    def received(self) -> list[str]:
        messages = []
        while True:
            try:
                messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return messages


@pytest.fixture(params=["path", "abstract"])
def systemd(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[NotifySocket]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.setblocking(False)
        if request.param == "path":
            sock.bind(str(tmp_path / "notify"))
            yield NotifySocket(sock, str(tmp_path / "notify"))
        else:
            name = f"mcu-updater-test-{uuid.uuid4().hex}"
            sock.bind("\0" + name)
            yield NotifySocket(sock, "@" + name)


def test_each_call_sends_its_documented_message(systemd: NotifySocket) -> None:
    notifier = Notifier(systemd.env)
    assert notifier.enabled
    notifier.ready()
    notifier.status("updating application 42 %")
    notifier.extend_timeout(90)
    notifier.watchdog()
    notifier.stopping()
    assert systemd.received() == [
        "READY=1",
        "STATUS=updating application 42 %",
        "EXTEND_TIMEOUT_USEC=90000000",
        "WATCHDOG=1",
        "STOPPING=1",
    ]


def test_reloading_carries_the_monotonic_clock(systemd: NotifySocket) -> None:
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    Notifier(systemd.env).reloading()
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    [message] = systemd.received()
    reloading, monotonic = message.split("\n")
    assert reloading == "RELOADING=1"
    assert monotonic.startswith("MONOTONIC_USEC=")
    assert before <= int(monotonic.removeprefix("MONOTONIC_USEC=")) <= after


def test_status_text_cannot_smuggle_other_assignments(systemd: NotifySocket) -> None:
    Notifier(systemd.env).status("failed\nREADY=1")
    assert systemd.received() == ["STATUS=failed READY=1"]


@pytest.mark.parametrize("notify_socket", [None, "", "relative/path"])
def test_without_a_usable_socket_every_call_is_a_no_op(notify_socket: str | None) -> None:
    env = {} if notify_socket is None else {"NOTIFY_SOCKET": notify_socket}
    notifier = Notifier(env)
    assert not notifier.enabled
    notifier.ready()
    notifier.status("idle")
    notifier.reloading()
    notifier.extend_timeout(1)
    notifier.watchdog()
    notifier.stopping()


def test_a_send_failure_is_logged_once_and_never_raised(tmp_path: Path) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")})
    with structlog.testing.capture_logs() as logs:
        notifier.ready()
        notifier.status("still here")
    assert [entry["event"] for entry in logs] == ["sd_notify failed"]
    assert logs[0]["notify_socket"] == str(tmp_path / "gone")


@pytest.mark.parametrize(
    ("env", "interval"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 30.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval(env: dict[str, str], interval: float | None) -> None:
    assert Notifier(env).watchdog_interval() == interval


async def test_watchdog_pings_at_half_the_interval(
    systemd: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    delays: list[float] = []
    real_sleep = asyncio.sleep

    async def recording_sleep(delay: float) -> None:
        delays.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", recording_sleep)
    task = asyncio.create_task(Notifier({**systemd.env, "WATCHDOG_USEC": "20000000"}).run_watchdog())
    while len(delays) < 3:
        await real_sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert delays[:3] == [10.0, 10.0, 10.0]
    assert systemd.received() == ["WATCHDOG=1"] * len(delays)


async def test_watchdog_keeps_time_on_a_real_loop(systemd: NotifySocket) -> None:
    task = asyncio.create_task(Notifier({**systemd.env, "WATCHDOG_USEC": "200000"}).run_watchdog())
    await asyncio.sleep(0.25)  # pings at 0, 100 and 200 ms
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert systemd.received() == ["WATCHDOG=1"] * 3


async def test_no_watchdog_task_without_a_watchdog(systemd: NotifySocket) -> None:
    await asyncio.wait_for(Notifier(systemd.env).run_watchdog(), timeout=1)
    await asyncio.wait_for(Notifier({"WATCHDOG_USEC": "100000"}).run_watchdog(), timeout=1)
    assert systemd.received() == []
