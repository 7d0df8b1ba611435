"""Firmware directories watched with the kernel's inotify: a package dropped or replaced starts a run."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from mcu_updater.state import StateStore
from mcu_updater.watch import DirectoryWatch, Watched
from tests.conftest import shared_fixture
from tests.simproc import DaemonProcess, SimulatorProcess
from tests.test_service import wait_for, write_config

pytestmark = pytest.mark.timeout(120)


async def first_change(watch: DirectoryWatch, change: asyncio.Future[str]) -> str:
    try:
        return await asyncio.wait_for(change, 30)
    finally:
        watch.close()


def replace_by_rename(source: Path, target: Path) -> None:
    """What OTA engines do: write a temporary file beside the target, then rename it over."""
    partial = target.with_name(f".{target.name}.part")
    shutil.copyfile(source, partial)
    partial.rename(target)


async def test_a_package_renamed_into_a_directory_is_reported_once_quiet(tmp_path: Path) -> None:
    change: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    watch = DirectoryWatch([Watched(tmp_path, "*.zip")], change.set_result, debounce=0.2)
    watch.start()
    (tmp_path / "notes.txt").write_text("not a package")
    replace_by_rename(shared_fixture("app_v2_signed.zip"), tmp_path / "app.zip")
    (tmp_path / "sd.zip").write_bytes(b"written in place")
    reason = await first_change(watch, change)
    assert reason.startswith("firmware changed: app.zip, sd.zip (")
    assert "notes.txt" not in reason
    assert ".part" not in reason


async def test_a_listed_package_is_watched_by_its_own_name(tmp_path: Path) -> None:
    change: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    watch = DirectoryWatch([Watched(tmp_path, "app.zip")], change.set_result, debounce=0.2)
    watch.start()
    (tmp_path / "other.zip").write_bytes(b"x")
    (tmp_path / "app.zip").write_bytes(b"y")
    (tmp_path / "app.zip").unlink()
    assert (await first_change(watch, change)).startswith("firmware changed: app.zip (")


async def test_a_missing_directory_is_logged_not_raised(tmp_path: Path) -> None:
    watch = DirectoryWatch([Watched(tmp_path / "absent", "*.zip")], lambda _: None)
    watch.start()
    watch.close()


def test_the_daemon_reconciles_when_an_engine_drops_or_replaces_a_package(tmp_path: Path) -> None:
    firmware = tmp_path / "firmware"
    firmware.mkdir()
    store = StateStore(tmp_path / "state")

    def application() -> int | None:
        return {e.type: e.version for e in store.load().inventory}.get("application")

    def runs() -> int:
        return store.load().runs

    # The Azure sample's bootloader accepts an older version: the rollback case RAUC describes.
    with SimulatorProcess(tmp_path / "nrf52.json", "--profile", "azure-sample") as sim:
        config = write_config(tmp_path, sim.port)
        config.write_text(config.read_text().replace(str(shared_fixture("app_v2_signed.zip")), str(firmware)))
        with DaemonProcess(config, tmp_path / "notify") as daemon:
            daemon.wait_ready()
            first = store.load().last_run
            assert first is not None
            assert (first.result, first.exit_code) == ("failed", 66), "nothing shipped yet"
            replace_by_rename(shared_fixture("app_v2_signed.zip"), firmware / "app.zip")
            wait_for(lambda: application() == 2 and runs() == 2, "the run the new package started")
            replace_by_rename(shared_fixture("app_v1_signed_downgrade.zip"), firmware / "app.zip")
            wait_for(lambda: application() == 1 and runs() == 3, "the run the rollback started")
            shutil.copyfile(shared_fixture("app_v2_signed.zip"), firmware / "app.zip")  # rewritten in place
            wait_for(lambda: application() == 2, "the run the rewrite started")
            err = daemon.stop()
        summary = sim.stop()
    assert "firmware changed: app.zip" in err
    assert summary.count("image: application v") == 3
