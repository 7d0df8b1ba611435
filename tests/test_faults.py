"""The fault matrix's in-memory rows, small: each on both profiles, seeded; no run may brick the device.
The rows that need a pty, processes, the daemon or mounts are in ``test_faults_daemon.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcu_updater.sim.faultmatrix import IN_MEMORY_KINDS, build_firmware
from mcu_updater.sim.faultmatrix.matrix import run_matrix, within_one_run
from mcu_updater.sim.validation import Profile

pytestmark = pytest.mark.timeout(180)


async def test_no_fault_bricks_and_every_failure_recovers(tmp_path: Path) -> None:
    firmware = {
        Profile.SDK: build_firmware(tmp_path / "sdk", signed=True),
        Profile.AZURE_SAMPLE: build_firmware(tmp_path / "azure", signed=False),
    }
    cells = await run_matrix(firmware, runs=3, seed=7, kinds=IN_MEMORY_KINDS)
    assert {(cell.kind, cell.profile) for cell in cells} == {
        (k, p) for k in IN_MEMORY_KINDS for p in firmware
    }
    outcomes = [outcome for cell in cells for outcome in cell.outcomes]
    assert len(outcomes) == 3 * len(IN_MEMORY_KINDS) * 2
    assert [o for o in outcomes if o.result == "brick"] == []
    failed = [o for o in outcomes if o.result == "clean-failure"]
    assert all(o.error for o in failed), "a clean failure names its cause"
    assert all(o.recovered for o in failed), "the next, fault-free run finishes the job"
    # One run survives each of these faults by itself, on both profiles (nrfutil 6.1.7 fails its first
    # run on most).
    for kind in IN_MEMORY_KINDS:
        if within_one_run(kind):
            assert [(o.fault, o.error) for o in outcomes if o.kind == kind and o.result != "success"] == []
    killed = [o for o in outcomes if o.kind == "host-killed"]
    assert all(o.result == "success" for o in killed)
    assert all(o.bytes_resent <= 4096 for o in killed), "a restarted host resumes, it does not start over"
