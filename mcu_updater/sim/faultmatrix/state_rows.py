"""Rows ``state-full`` and ``state-readonly``: the daemon's state directory refuses writes.

Each run mounts a one-page tmpfs on the state directory, inside a private mount namespace (a child
process under ``unshare -m``, which needs root or CAP_SYS_ADMIN), and either fills it (the kernel then
answers ENOSPC) or remounts it read-only (EROFS). The daemon's start-up run must still install the update,
say once, in one line, that it could not record it, and keep serving; once space returns (the filler
deleted, the mount made writable again) the next run records normally.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import errno
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

import structlog

from mcu_updater.sim.device import Timing
from mcu_updater.sim.faultmatrix import (
    Firmware,
    Outcome,
    build_firmware,
    classify,
    memory_connector,
    update,
)
from mcu_updater.sim.faultmatrix.daemon_rows import gateway_gpio, open_lines, prepared_device, service
from mcu_updater.sim.validation import Profile
from mcu_updater.state import StateStore

KINDS: Final = ("state-full", "state-readonly")
CAUSE: Final = {"state-full": os.strerror(errno.ENOSPC), "state-readonly": os.strerror(errno.EROFS)}
COMPLAINT: Final = "could not save the state"


def _tool(name: str, *args: str, check: bool = True) -> None:
    """Run util-linux's ``mount`` or ``umount``."""
    subprocess.run([shutil.which(name) or name, *args], check=check, capture_output=True)


def _mount(*args: str) -> None:
    _tool("mount", *args)


def _fill(directory: Path) -> Path:
    """Write a file until the file system is full; returns it."""
    filler = directory / "filler"
    with filler.open("wb", buffering=0) as out:
        try:
            while True:
                out.write(bytes(512))
        except OSError as error:
            if error.errno != errno.ENOSPC:
                raise
    return filler


async def state_trouble(
    kind: str, profile: Profile, firmware: Firmware, rng: random.Random, directory: Path
) -> Outcome:
    state_dir = directory / "state"
    state_dir.mkdir(parents=True)
    _mount("-t", "tmpfs", "-o", "size=4k,mode=0700", "tmpfs", str(state_dir))
    device = await prepared_device(profile, firmware, Timing())
    try:
        filler = _fill(state_dir) if kind == "state-full" else None
        if filler is None:
            _mount("-o", "remount,ro", str(state_dir))
        gpio = gateway_gpio(device)
        with structlog.testing.capture_logs() as logs:
            async with service(device, firmware, directory, open_lines(gpio)) as running:
                await running.runs(1)
                first = running.daemon.state.last_run
                alive = not running.task.done()
                complaints = [entry for entry in logs if entry["event"] == COMPLAINT]
                # Space returns after a drawn while; the next request runs and must record normally.
                await asyncio.sleep(rng.uniform(0.0, 0.2))
                if filler is not None:
                    filler.unlink()
                else:
                    _mount("-o", "remount,rw", str(state_dir))
                running.daemon.trigger("fault matrix")
                await running.runs(2)
        saved = StateStore(state_dir).load()
        problems = []
        if first is None or first.result != "updated":
            problems.append(
                f"first run {first.result if first else 'missing'}: {first.error if first else ''}"
            )
        if len(complaints) != 1 or CAUSE[kind] not in str(complaints[0].get("error")):
            problems.append(f"{len(complaints)} complaints about the state instead of one: {complaints}")
        if not alive:
            problems.append("the daemon stopped")
        if saved.runs != 2 or saved.last_run is None or saved.last_run.result != "up-to-date":
            problems.append(f"after space returned the state file says {saved.to_json()}")
        outcome = await classify(
            device,
            firmware,
            kind=kind,
            profile=profile,
            fault=f"{CAUSE[kind]} on the state directory",
            error="; ".join(problems),
            resent=0,
            again=lambda: update(device, firmware.update, memory_connector(device)),
        )
        return outcome if not problems else dataclasses.replace(outcome, recovered=False)
    finally:
        await device.close()
        _tool("umount", "--lazy", str(state_dir), check=False)


async def run_cell(kind: str, profile: Profile, *, runs: int, seed: int, directory: Path) -> list[Outcome]:
    """``runs`` runs in a child process with its own mount namespace (the mounts vanish with it)."""
    process = await asyncio.create_subprocess_exec(
        "unshare",
        "--mount",
        "--propagation",
        "private",
        sys.executable,
        "-m",
        __name__,
        kind,
        profile.value,
        str(runs),
        str(seed),
        str(directory),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await process.communicate()
    finally:
        if process.returncode is None:  # cancelled: its mounts go with it
            process.kill()
    if process.returncode != 0:
        raise RuntimeError(
            f"the {kind} runs failed (exit {process.returncode}; they need root for unshare and mount): "
            f"{err.decode(errors='replace')[-2000:]}"
        )
    return [_outcome(json.loads(line)) for line in out.decode().splitlines() if line.startswith("{")]


def _outcome(data: dict[str, Any]) -> Outcome:
    return Outcome(**{**data, "profile": Profile(data["profile"])})


async def _child(kind: str, profile: Profile, runs: int, seed: int, directory: Path) -> None:
    firmware = build_firmware(directory / "firmware", signed=profile is Profile.SDK)
    for index in range(runs):
        rng = random.Random(f"{seed}/{kind}/{profile.value}/{index}")  # noqa: S311 - reproducible draws
        outcome = await state_trouble(kind, profile, firmware, rng, directory / f"run{index}")
        print(json.dumps({**dataclasses.asdict(outcome), "profile": profile.value}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description="state-directory fault runs (inside unshare -m)")
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("profile", type=Profile)
    parser.add_argument("runs", type=int)
    parser.add_argument("seed", type=int)
    parser.add_argument("directory", type=Path)
    args = parser.parse_args()
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())
    asyncio.run(_child(args.kind, args.profile, args.runs, args.seed, args.directory))


if __name__ == "__main__":
    main()
