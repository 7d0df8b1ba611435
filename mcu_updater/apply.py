"""`mcu-updater apply` and `verify`: the commands OTA engines (Mender, SWUpdate, RAUC, ADU) call.

``apply --package X.zip`` brings the nRF52 to the package's images; ``verify --package X.zip`` checks
that it runs exactly them. Both validate the package with the configuration's key, signature policy
and hw_version before anything else. If the daemon answers on its control socket, the job is handed to
it (it holds the lines and the port) and its events are streamed back; otherwise the command does the
work itself, with the configuration's lines and port, under the run lock the daemon also takes.

Exit codes are `flash`'s (0 also when everything is already installed); `verify` exits 1 when the device
runs something else, naming the difference on one line. With ``--json`` stdout carries NDJSON: the
run's events (``accepted`` when the daemon took the job, ``connected``, ``inventory``, ``plan``,
``image_started``, ``progress``, ``image_sent``, ``activated``, ``finished``, ``waiting`` for the run
lock, ``retrying``), then one ``result`` object (see ``jobs.result_event``).

A second job while one runs waits for it: behind the daemon's current run (``accepted`` says
``queued``), or, standalone, for the run lock (a ``waiting`` event; after LOCK_WAIT it gives up, 75).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:  # the modules behind these load only when a job runs, so `flash` stays light
    from mcu_updater.config import Config
    from mcu_updater.console import Renderer
    from mcu_updater.jobs import Emit, Job, JobKind

LOCK_WAIT: Final = 600.0
"""How long a standalone job waits for another run to release the run lock before exit 75."""
STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


def add_apply_parsers(commands: argparse._SubParsersAction[Any], default_config: Path) -> None:
    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--package", type=Path, required=True, help="nrfutil .zip package")
        parser.add_argument(
            "--config", type=Path, default=default_config, help="configuration file (default %(default)s)"
        )
        parser.add_argument("--json", action="store_true", help="NDJSON events, then a result object")

    apply = commands.add_parser(
        "apply",
        help="bring the target to a package's images (via the daemon if it runs)",
        description="Validate the package, enter the bootloader, send what differs and return the "
        "target to its application. Exit 0 also when everything is already installed.",
    )
    common(apply)
    apply.add_argument(
        "--dry-run", action="store_true", help="validate, read the inventory and print the plan; send nothing"
    )
    apply.add_argument(
        "--allow-downgrade",
        action="store_true",
        help="install an older version even if policy.downgrade is deny (an OTA engine's rollback)",
    )
    verify = commands.add_parser(
        "verify",
        help="exit 0 iff the target runs exactly a package's versions (else 1 naming the difference)",
    )
    common(verify)


def run_apply(args: argparse.Namespace) -> int:
    from mcu_updater.jobs import JobKind  # noqa: PLC0415

    return _run_job_command(args, JobKind.APPLY)


def run_verify(args: argparse.Namespace) -> int:
    from mcu_updater.jobs import JobKind  # noqa: PLC0415

    return _run_job_command(args, JobKind.VERIFY)


def _finish(output: Renderer, result: dict[str, Any]) -> None:
    """The result: a record in JSON mode, its message otherwise; a failure on stderr either way."""
    if output.json_lines:
        output.record(result)
    elif result["ok"]:
        print(result["message"], flush=True)
    if not result["ok"]:
        hint = f"; {result['hint']}" if result.get("hint") else ""
        print(f"mcu-updater: error: {result['message']}{hint}", file=sys.stderr, flush=True)


def _run_job_command(args: argparse.Namespace, kind: JobKind) -> int:
    args.package = args.package.absolute()  # the daemon may run elsewhere; the record names it fully
    return asyncio.run(_job_command(args, kind))


async def _job_command(args: argparse.Namespace, kind: JobKind) -> int:
    from mcu_updater.console import Renderer  # noqa: PLC0415
    from mcu_updater.errors import McuUpdaterError, TransientError  # noqa: PLC0415
    from mcu_updater.jobs import error_result, installed_versions  # noqa: PLC0415
    from mcu_updater.state import StateStore  # noqa: PLC0415

    output = Renderer(json_lines=args.json)
    known: dict[str, int] = {}
    # An engine that gives up sends SIGTERM: the job is cut cleanly (the target returned to its
    # application, the run recorded) and the result still written. A daemon's job goes on regardless.
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, task.cancel)
    try:
        from mcu_updater.config import load_config  # noqa: PLC0415

        config = load_config(args.config)
        known = installed_versions(StateStore(config.state_dir).load().inventory)
        job = await _prepare(config, args, kind)
        result = await submit(config, job, output.record)
    except McuUpdaterError as error:
        result = error_result(error, known)
    except asyncio.CancelledError:
        stopped = TransientError("stopped by a signal during the job", "run it again: the transfer resumes")
        result = error_result(stopped, known)
    finally:
        for signum in STOP_SIGNALS:
            loop.remove_signal_handler(signum)
    _finish(output, result)
    return int(result["exit_code"])


async def _prepare(config: Config, args: argparse.Namespace, kind: JobKind) -> Job:
    """Validate the package as the user named it (errors name their path), then take its bytes."""
    from mcu_updater import logs  # noqa: PLC0415
    from mcu_updater.errors import InputMissingError, UsageError  # noqa: PLC0415
    from mcu_updater.jobs import Job  # noqa: PLC0415
    from mcu_updater.service import package_loader, refuse_virtual_lines  # noqa: PLC0415

    # In the journal the job tells its whole story; on a terminal or a pipe the output says it all.
    journal = logs.choose_output(sys.stderr) is logs.Output.JOURNAL
    logs.configure_logging(level=config.logging.level.value if journal else "critical")
    refuse_virtual_lines(config, args.config)
    package: Path = args.package
    if package.suffix.lower() != ".zip":
        raise UsageError(
            f"{package} is not a .zip package", "give the nrfutil .zip (a .bin/.dat pair works with flash)"
        )
    await asyncio.to_thread(package_loader(config), package)
    try:
        data = await asyncio.to_thread(package.read_bytes)
    except OSError as exc:
        raise InputMissingError(
            f"package {package} cannot be read ({exc.strerror})", "check the path"
        ) from exc
    return Job(
        kind,
        data,
        str(package),
        allow_downgrade=getattr(args, "allow_downgrade", False),
        dry_run=getattr(args, "dry_run", False),
    )


async def submit(config: Config, job: Job, emit: Emit) -> dict[str, Any]:
    """Hand ``job`` to the daemon if it answers, else run it here; return its result event."""
    from mcu_updater.control import SOCKET_NAME, NoDaemonError, stream  # noqa: PLC0415
    from mcu_updater.errors import TransientError  # noqa: PLC0415

    try:
        return await stream(config.runtime_dir / SOCKET_NAME, job.to_request(), emit)
    except NoDaemonError:
        pass
    except asyncio.CancelledError:
        raise TransientError(
            "interrupted while the daemon runs the job; it goes on there",
            "`mcu-updater status` shows its result",
        ) from None
    return await run_here(config, job, emit)


async def run_here(config: Config, job: Job, emit: Emit) -> dict[str, Any]:
    """Run ``job`` in this process, holding the lines and the port for its duration."""
    from mcu_updater.hw.gpio import open_target_lines  # noqa: PLC0415
    from mcu_updater.notify import Notifier  # noqa: PLC0415
    from mcu_updater.service import make_daemon  # noqa: PLC0415

    lines = open_target_lines(config.gpio.backend, config.gpio.reset, config.gpio.dfu)
    try:
        # No sd_notify: an engine that runs us under its own Type=notify unit must not hear our status.
        runner = make_daemon(config, lines=lines, button=None, notifier=Notifier({}))
        return await runner.run_job(job, emit, lock_timeout=LOCK_WAIT)
    finally:
        lines.close()
