"""Rows ``daemon-killed`` and ``daemon-killed-no-lines``: the service SIGKILLed mid-image and restarted
as systemd restarts it (Restart=on-failure after RestartSec).

Real processes: a ``mcu-updater simulate`` serving the device on a pty (through a ``--link``), and the
service on a gateway configuration. The harness kills the service with SIGKILL at a drawn moment of a
drawn image's data (after the device accepted that image's init packet), waits a drawn RestartSec, and
starts it again (the unit says RestartSec=10s; a shorter pause changes nothing the device can tell, as
its inactivity timeout is 120 s, and keeps runs short). The simulator's summary is the record: images
validated with their SHA-256, command CREATEs and init EXECUTEs, firmware bytes written.

``daemon-killed``: reset and DFU wired. The service runs as ``daemon_process`` (the code of ``mcu-updater
run`` with the pins requested from the simulator's ``--lines`` socket). When it dies its lines are released
(reset already released, DFU floats), so the bootloader keeps its RAM progress until the restarted
service, which holds the target in reset while it starts and then pulses reset to enter the bootloader,
resets it. The accepted init packet is kept in flash, firmware progress is not (``docs/dfu-protocol.md``
§12): the restarted service must re-send the init packet as SELECT + EXECUTE without a CREATE, skip the
images already installed, and send the interrupted image's data again from the offset the device
reports after that reset, which is 0: the bytes re-sent are at most that image's size.

``daemon-killed-no-lines``: ``gpio.backend: none`` (the DFU pin strapped), the real ``mcu-updater run``.
Nothing resets the device, so the restarted service finds the RAM progress: SELECT + EXECUTE for the init
packet, and data from the exact offset the device reports: less than one object is sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import shutil
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives import serialization

from mcu_updater.sim.device import VirtualNrf52
from mcu_updater.sim.faultmatrix import Firmware, Outcome, memory_connector, settled, update
from mcu_updater.sim.state import StateFile
from mcu_updater.sim.validation import Profile, image_kind

BAUD: Final = 115_200
"""The line rate the simulator models: an image's data takes about a second, a window to kill in."""
RUN_DEADLINE: Final = 60.0
OBJECT_SIZE: Final = 4096
IMAGE_LINE: Final = re.compile(r"^image: (\w+) v\d+, (\d+) B, sha256 ([0-9a-f]+)")
OBJECTS_LINE: Final = re.compile(r"^objects: command (\d+) created, (\d+) executed;.*written: (.*)$")


class Child:
    """A child process whose output lines are collected as they come."""

    def __init__(self, process: asyncio.subprocess.Process, stream: asyncio.StreamReader) -> None:
        self.process = process
        self.lines: list[str] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read(stream))

    @classmethod
    async def start(cls, *args: str, stream: str) -> Child:
        process = await asyncio.create_subprocess_exec(
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE if stream == "stderr" else asyncio.subprocess.DEVNULL,
        )
        reader = process.stderr if stream == "stderr" else process.stdout
        assert reader is not None
        return cls(process, reader)

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            self.lines.append(line.decode(errors="replace").rstrip("\n"))
            self._changed.set()
        self._changed.set()

    async def wait_for(self, found: Callable[[list[str]], bool]) -> bool:
        """Until ``found(lines)``; False if the process ended first."""
        while not found(self.lines):
            if self._reader.done():
                return found(self.lines)
            self._changed.clear()
            await self._changed.wait()
        return True

    def kill(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()

    async def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.process.returncode is None:
            self.process.send_signal(signum)
        code = await self.process.wait()
        await self._reader
        return code


def _count(lines: list[str], text: str) -> int:
    return sum(text in line for line in lines)


def _run_ended(lines: list[str]) -> bool:
    return any("update run finished" in line or "update run failed" in line for line in lines)


@dataclass
class Summary:
    """The simulator's closing report, and from its event lines whether the kill interrupted an image."""

    images: set[tuple[str, str]] = field(default_factory=set)
    app_valid: bool = False
    commands_created: int = 0
    inits_executed: int = 0
    firmware_bytes: int = 0
    interrupted: bool = False
    """The image the kill aimed at was validated only after its init packet was executed once more (by
    the restarted service); False when it was complete before the service died (a late kill)."""

    @classmethod
    def parse(cls, lines: list[str], kind: str, position: int) -> Summary:
        """``position``: the aimed image's place in the send order (1 = first)."""
        inits = [i for i, line in enumerate(lines) if line == "init packet executed"]
        received = [i for i, line in enumerate(lines) if line.startswith(f"received {kind} ")]
        summary = cls(interrupted=len(inits) > position and bool(received) and received[0] > inits[position])
        for line in lines:
            if image := IMAGE_LINE.match(line):
                summary.images.add((image[1], image[3]))
            elif objects := OBJECTS_LINE.match(line):
                summary.commands_created, summary.inits_executed = int(objects[1]), int(objects[2])
                summary.firmware_bytes = sum(int(n) for n in re.findall(r"\w+ (\d+)", objects[3]))
            summary.app_valid |= line.startswith("inventory: application")
        return summary


def _config(directory: Path, link: Path, *, signed: bool, lines: bool) -> str:
    key = f"\n  public_key: {directory / 'key.pem'}" if signed else ""
    backend = "virtual" if lines else "none"
    return (
        f"serial:\n  port: {link}\n  baud: {BAUD}\n"
        f"gpio:\n  backend: {backend}\n"
        f"firmware: {directory / 'firmware'}\n"
        f"state_dir: {directory / 'state'}\n"
        f"runtime_dir: {directory / 'run'}\n"
        f"target:\n  hw_version: 52{key}\n"
    )


async def _prepare(profile: Profile, firmware: Firmware, directory: Path, *, lines: bool) -> Path:
    """The device's flash with application v1 installed by a clean run, and the gateway's files."""
    state = directory / "nrf52.json"
    device = VirtualNrf52(store=StateFile(state), public_key=firmware.public_key, profile=profile)
    async with device:
        await update(device, firmware.previous, memory_connector(device))
        await settled(device)
    (directory / "firmware").mkdir()
    shutil.copy(firmware.update.path, directory / "firmware" / "update.zip")
    if firmware.public_key is not None:
        pem = firmware.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        (directory / "key.pem").write_bytes(pem)
    config = directory / "mcu-updater.yaml"
    signed = firmware.public_key is not None
    config.write_text(_config(directory, directory / "ttyNRF52", signed=signed, lines=lines))
    return state


async def daemon_killed(profile: Profile, firmware: Firmware, rng: random.Random, directory: Path) -> Outcome:
    return await _killed(profile, firmware, rng, directory, lines=True)


async def daemon_killed_no_lines(
    profile: Profile, firmware: Firmware, rng: random.Random, directory: Path
) -> Outcome:
    return await _killed(profile, firmware, rng, directory, lines=False)


async def _killed(
    profile: Profile, firmware: Firmware, rng: random.Random, directory: Path, *, lines: bool
) -> Outcome:
    state = await _prepare(profile, firmware, directory, lines=lines)
    config = str(directory / "mcu-updater.yaml")
    simulate = [sys.executable, "-m", "mcu_updater", "simulate", "--state", str(state)]
    simulate += ["--profile", profile.value, "--baud", str(BAUD), "--link", str(directory / "ttyNRF52")]
    if firmware.public_key is not None:
        simulate += ["--public-key", str(directory / "key.pem")]
    if lines:
        simulate += ["--lines", str(directory / "lines")]
        service = [sys.executable, "-m", "mcu_updater.sim.faultmatrix.daemon_process", config]
        service += [str(directory / "lines")]
    else:
        service = [sys.executable, "-m", "mcu_updater", "run", "--config", config]
    order = list(firmware.update.images)
    image = rng.choice(order)
    position = order.index(image) + 1
    delay = rng.uniform(0.0, 0.8 * image.size * 10 / BAUD)
    restart_sec = rng.uniform(0.1, 1.0)
    fault = f"SIGKILL {delay:.2f} s into {image_kind(image.kind)} data, restarted after {restart_sec:.2f} s"
    sim = await Child.start(*simulate, stream="stdout")
    daemons: list[Child] = []
    try:
        await asyncio.wait_for(sim.wait_for(lambda lines: _count(lines, "PTY ") > 0), RUN_DEADLINE)
        daemons.append(await Child.start(*service, stream="stderr"))
        async with asyncio.timeout(RUN_DEADLINE):
            await sim.wait_for(lambda lines: _count(lines, "init packet executed") >= position)
            await asyncio.sleep(delay)
            killed = await daemons[-1].stop(signal.SIGKILL) == -signal.SIGKILL
            if not killed:
                fault += " (the service had ended first)"
            await asyncio.sleep(restart_sec)
            errors = []
            for _attempt in range(2):  # the restart, and after a clean failure the next one
                daemons.append(await Child.start(*service, stream="stderr"))
                await daemons[-1].wait_for(_run_ended)
                await daemons[-1].stop()
                if any("update run finished" in line for line in daemons[-1].lines):
                    break
                errors.append(next((line for line in daemons[-1].lines if "run failed" in line), "no result"))
        await sim.stop()
    finally:
        # Every child gets its signal before the first await, so a cancelled run leaves none behind.
        children = (*daemons, sim)
        for child in children:
            child.kill()
        await asyncio.gather(*(child.stop() for child in children), return_exceptions=True)
    # After the reset of the restarted service's start-up the interrupted image starts again from 0;
    # without one, the device's RAM progress leaves at most the object in flight to send again.
    allowed = image.size if lines else OBJECT_SIZE - 1
    kind = "daemon-killed" if lines else "daemon-killed-no-lines"
    summary = Summary.parse(sim.lines, image_kind(image.kind), position)
    return _judge(kind, profile, firmware, fault=fault, errors=errors, summary=summary, allowed=allowed)


def _judge(
    kind: str,
    profile: Profile,
    firmware: Firmware,
    *,
    fault: str,
    errors: list[str],
    summary: Summary,
    allowed: int,
) -> Outcome:
    wanted = {(image_kind(i.kind), i.sha256.hex()) for i in firmware.update.images}
    installed = wanted <= summary.images and summary.app_valid
    resent = summary.firmware_bytes - sum(i.size for i in firmware.update.images)
    images = len(firmware.update.images)
    fault += f"; init packet created {summary.commands_created}x, executed {summary.inits_executed}x"
    if not summary.interrupted:
        fault += "; the image was complete when the service died"
    problems = list(errors)
    if summary.commands_created != images:
        problems.append(f"the init packet was created {summary.commands_created} times for {images} images")
    if summary.inits_executed != images + summary.interrupted:
        problems.append("the restarted service did not resume the accepted init packet with SELECT + EXECUTE")
    if resent > allowed:
        problems.append(f"{resent} B re-sent: more than the {allowed} B a resumption may send again")
    if installed and not problems:
        return Outcome(kind, profile, "success", fault, bytes_resent=resent)
    if not installed and not summary.app_valid:
        return Outcome(kind, profile, "brick", fault, "; ".join(problems), bytes_resent=resent)
    recovered = installed and not problems[len(errors) :]
    return Outcome(kind, profile, "clean-failure", fault, "; ".join(problems), recovered, resent)
