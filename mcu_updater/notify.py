"""sd_notify: tell systemd we are ready, what we are doing, that we are alive, and that we are stopping.

The protocol is one datagram of ``KEY=value`` lines to ``$NOTIFY_SOCKET`` (a path, or ``@name`` for the
abstract namespace). Without that variable (not started by systemd, or not ``Type=notify``) every call
is a no-op, so the daemon calls these unconditionally.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Mapping
from typing import Final

import structlog

log = structlog.get_logger(__name__)


CRITICAL_SEND_TIMEOUT: Final = 1.0


class Notifier:
    """Sends sd_notify messages; a failed send is logged once and never raised."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        """Read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` from ``environ`` (default
        ``os.environ``)."""
        env = os.environ if environ is None else environ
        self._notify_socket = env.get("NOTIFY_SOCKET", "")
        self._address = _socket_address(self._notify_socket)
        self._watchdog_usec = env.get("WATCHDOG_USEC", "")
        self._watchdog_pid = env.get("WATCHDOG_PID", "")
        self._send_failed = False

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def ready(self) -> None:
        """Configuration is valid and the devices are held: systemd may start what depends on us."""
        self._send("READY=1", critical=True)

    def status(self, text: str) -> None:
        """One line for ``systemctl status``, e.g. ``updating application 42 %``."""
        # A newline would start a new assignment: status text must never be able to say READY=1.
        self._send("STATUS=" + " ".join(text.splitlines()))

    def stopping(self) -> None:
        self._send("STOPPING=1", critical=True)

    def reloading(self) -> None:
        """Reload started; call :meth:`ready` when done. MONOTONIC_USEC is what Type=notify-reload
        (systemd ≥ 253) requires to match the reload to its request; plain Type=notify ignores it."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send(f"RELOADING=1\nMONOTONIC_USEC={usec}")

    def extend_timeout(self, seconds: float) -> None:
        """Ask systemd to wait ``seconds`` more for start-up (or stop) before declaring a timeout."""
        self._send(f"EXTEND_TIMEOUT_USEC={round(seconds * 1_000_000)}")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def watchdog_interval(self) -> float | None:
        """systemd's watchdog timeout in seconds (``WatchdogSec=``), or None when it is not watching us."""
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        if usec <= 0 or (self._watchdog_pid and self._watchdog_pid != str(os.getpid())):
            return None
        return usec / 1_000_000

    async def run_watchdog(self) -> None:
        """Ping at half the watchdog timeout until cancelled; returns at once if there is no watchdog.

        Runs on the event loop on purpose: a loop that stops turning stops the pings, and systemd
        restarts us.
        """
        interval = self.watchdog_interval()
        if interval is None or not self.enabled:
            return
        while True:
            self.watchdog()
            await asyncio.sleep(interval / 2)

    def _send(self, message: str, *, critical: bool = False) -> None:
        if self._address is None:
            return
        try:  # a socket per message, as sd_notify() does: nothing held open between messages
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                # A status may be lost when the manager's queue is full, but not READY or STOPPING:
                # those wait up to a second for room (systemd drains its queue continuously).
                sock.settimeout(CRITICAL_SEND_TIMEOUT if critical else 0.0)
                sock.sendto(message.encode(), self._address)
        except OSError as error:
            if not self._send_failed:
                log.warning(
                    "sd_notify failed", notify_socket=self._notify_socket, error=str(error), message=message
                )
            self._send_failed = True


def _socket_address(value: str) -> str | None:
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    if value:
        log.warning("NOTIFY_SOCKET ignored: not a path or @abstract name", value=value)
    return None
