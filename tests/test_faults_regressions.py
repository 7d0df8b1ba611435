"""Bugs the fault matrix found, each pinned by the single fault that revealed it."""

from __future__ import annotations

import math
from pathlib import Path

from mcu_updater.dfu.wire import OpCode
from mcu_updater.sim.device import VirtualNrf52
from mcu_updater.sim.faultmatrix import build_firmware, installed, memory_connector, settled, update
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
