"""Open a UART with pyserial-asyncio-fast and turn every way it can fail into advice.

8N1, RTS/CTS on by default (the SDK 15.2 serial bootloader is built with hardware flow control),
exclusive open (an advisory lock: it catches a second mcu-updater, not a getty or minicom, which is
why a busy port is also looked up in /proc).
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Callable
from pathlib import Path

import serial
import serial_asyncio_fast

from mcu_updater.errors import LinkError


def port_holders(port: str, proc: Path = Path("/proc")) -> list[str]:
    """Processes that have ``port`` open, as "name (pid N)", read from ``proc`` where permitted."""
    target = os.path.realpath(port)
    found = []
    try:
        processes = [p for p in proc.iterdir() if p.name.isdigit() and int(p.name) != os.getpid()]
    except OSError:
        return []
    for pid_dir in processes:
        try:
            if any(os.path.realpath(fd) == target for fd in (pid_dir / "fd").iterdir()):
                found.append(f"{(pid_dir / 'comm').read_text().strip()} (pid {pid_dir.name})")
        except OSError:
            continue
    return found


def explain_open_error(port: str, error: BaseException) -> LinkError:
    """One-line LinkError for a failed open, naming the fix."""
    cause = error.__cause__ if isinstance(error.__cause__, OSError) else error
    code = getattr(cause, "errno", None)
    if code is None and isinstance(error, serial.SerialException) and error.args:
        code = error.args[0] if isinstance(error.args[0], int) else None
    text = str(error)
    if code == errno.ENOENT or "No such file" in text:
        return LinkError(
            f"serial port {port} does not exist",
            "check the port name (e.g. /dev/serial0 on a Raspberry Pi, /dev/ttyACM0 for a DK) and that "
            "the UART is enabled",
        )
    if code in (errno.EACCES, errno.EPERM) or "Permission denied" in text:
        return LinkError(
            f"no permission to open serial port {port}",
            "add the service user to the 'dialout' group (or run with access to the port)",
        )
    if code in (errno.EBUSY, errno.EAGAIN, errno.EWOULDBLOCK) or "lock" in text.lower():
        holders = port_holders(port)
        who = f" by {', '.join(holders)}" if holders else " by another process"
        return LinkError(
            f"serial port {port} is held{who}",
            "stop that program (a serial console/getty, ModemManager or another mcu-updater) and retry",
        )
    return LinkError(f"cannot open serial port {port}: {text}", "check the port name and the cable")


async def open_serial(
    port: str,
    protocol_factory: Callable[[], asyncio.Protocol],
    *,
    baud: int = 115200,
    flow_control: bool = True,
) -> tuple[asyncio.Transport, asyncio.Protocol]:
    """Open ``port`` as an asyncio transport driving the protocol ``protocol_factory`` makes."""
    loop = asyncio.get_running_loop()
    try:
        transport, protocol = await serial_asyncio_fast.create_serial_connection(
            loop,
            protocol_factory,
            port,
            baudrate=baud,
            bytesize=serial.EIGHTBITS,
            parity=serial.PARITY_NONE,
            stopbits=serial.STOPBITS_ONE,
            rtscts=flow_control,
            exclusive=True,
        )
    except (OSError, serial.SerialException, ValueError) as error:
        raise explain_open_error(port, error) from error
    # connection_made is scheduled with call_soon: let it run so the protocol can write at once.
    await asyncio.sleep(0)
    serial_port = transport.serial
    if serial_port is not None:
        # Bytes the target sent before we opened (boot banners, half replies) are not ours.
        serial_port.reset_input_buffer()
    return transport, protocol
