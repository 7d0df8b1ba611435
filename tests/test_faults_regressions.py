"""Bugs the fault matrix found, each pinned by the single fault that revealed it."""

from __future__ import annotations

import math
from pathlib import Path

from mcu_updater.dfu.wire import OpCode
from mcu_updater.sim.device import Timing, VirtualNrf52
from mcu_updater.sim.faultmatrix import build_firmware, installed, memory_connector, settled, update
from mcu_updater.sim.faultmatrix.daemon_rows import gateway_gpio, open_lines, prepared_device, service
from mcu_updater.sim.faults import Faults, ReplyFault
from mcu_updater.sim.validation import Profile


async def test_a_lost_final_execute_reply_does_not_fail_a_run_the_device_completed(tmp_path: Path) -> None:
    """The reference solution's bootloader refuses the same version again (EXT 0x05): the retry after
    a corrupted reply to the last EXECUTE, which the device had carried out, used to end the run with
    "firmware version too low" although the new application was installed."""
    firmware = build_firmware(tmp_path, signed=False)
    async with VirtualNrf52(profile=Profile.AZURE_SAMPLE) as device:
        await update(device, firmware.previous, memory_connector(device))
        await settled(device)
        # One EXECUTE for each init packet and for each 4 KiB object: the last is the final one.
        last = sum(1 + math.ceil(image.size / 4096) for image in firmware.update.images)
        fault = ReplyFault("corrupt", opcode=int(OpCode.EXECUTE), occurrence=last)
        device.faults = Faults(replies=(fault,))
        sent = await update(device, firmware.update, memory_connector(device))
        await settled(device)
        assert [event.image.name for event in sent] == [image.name for image in firmware.update.images]
        assert installed(device, firmware)


async def test_a_run_that_installed_everything_before_a_retry_reports_updated(tmp_path: Path) -> None:
    """The daemon reported ``up-to-date`` (and nothing sent) for a run whose attempt installed every
    image and then failed transiently while confirming it: the retry found nothing left to send. The
    fault matrix's button row hit it under load."""
    firmware = build_firmware(tmp_path / "firmware", signed=True)
    device = await prepared_device(Profile.SDK, firmware, Timing())
    app = firmware.update.images[-1]
    dropped: list[bytes] = []

    def first_inventory_reply_after_the_update(frame: bytes) -> bool:
        arrived = any(record.sha256 == app.sha256.hex() for record in device.bootloader.flash.images)
        if arrived and not dropped and frame[1] == OpCode.FW_VERSION:
            dropped.append(frame)
            return True
        return False

    device.faults = Faults(replies=(ReplyFault("drop", match=first_inventory_reply_after_the_update),))
    try:
        async with service(device, firmware, tmp_path, open_lines(gateway_gpio(device))) as running:
            await running.runs(1)
            record = running.daemon.state.last_run
    finally:
        await device.close()
    assert dropped, "the fault fired"
    assert record is not None
    assert (record.result, record.sent) == ("updated", ("softdevice", "application"))
