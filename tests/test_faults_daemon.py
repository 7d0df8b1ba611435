"""The fault matrix's rows beyond the in-memory line, small: a real pty that vanishes, the service killed
and restarted as processes, button presses during a run, a state directory that is full or read-only,
GPIO lines held by another program. Each on both profiles, seeded; no run may brick the device."""

from __future__ import annotations

from pathlib import Path

import pytest

from mcu_updater.sim.faultmatrix import IN_MEMORY_KINDS, build_firmware
from mcu_updater.sim.faultmatrix.matrix import KINDS, run_matrix, within_one_run
from mcu_updater.sim.validation import Profile

pytestmark = pytest.mark.timeout(240)

ROWS = tuple(kind for kind in KINDS if kind not in IN_MEMORY_KINDS)
RUNS = 2


async def test_no_fault_bricks_and_every_failure_recovers(tmp_path: Path) -> None:
    firmware = {
        Profile.SDK: build_firmware(tmp_path / "sdk", signed=True),
        Profile.AZURE_SAMPLE: build_firmware(tmp_path / "azure", signed=False),
    }
    cells = await run_matrix(firmware, runs=RUNS, seed=11, kinds=ROWS)
    assert {(cell.kind, cell.profile) for cell in cells} == {(k, p) for k in ROWS for p in firmware}
    outcomes = [outcome for cell in cells for outcome in cell.outcomes]
    assert len(outcomes) == RUNS * len(ROWS) * 2
    assert [o for o in outcomes if o.result == "brick"] == []
    by_kind = {kind: [o for o in outcomes if o.kind == kind] for kind in ROWS}
    # These faults are survived by the one run they hit (the checks inside each row included: the
    # transfer resumed after the pty came back; exactly one more run after the presses, no byte sent
    # twice; exactly one log line about the state, which is recorded again once space returns).
    for kind in ("pty-vanish", "button-presses", "state-full", "state-readonly"):
        assert within_one_run(kind)
        assert [(o.fault, o.error) for o in by_kind[kind] if o.result != "success"] == [], kind
    # The restarted service resumes: the accepted init packet is re-sent as SELECT + EXECUTE (never
    # created again) and images already installed are skipped. With reset wired, the reset of its
    # start-up cost the device its RAM progress: the interrupted image's data is sent again from 0.
    # Without lines nothing resets the device: data continues from the exact offset it reports.
    interrupted = max(image.size for image in firmware[Profile.SDK].update.images)
    for kind, allowed in (("daemon-killed", interrupted), ("daemon-killed-no-lines", 4095)):
        for outcome in by_kind[kind]:
            assert (outcome.result, outcome.error) == ("success", ""), outcome.fault
            assert outcome.bytes_resent <= allowed
        # A kill that lands after the image was complete (a loaded machine) leaves nothing to resume.
        resumed = [o for o in by_kind[kind] if "complete when the service died" not in o.fault]
        assert resumed, "no kill interrupted an image"
        assert all("init packet created 2x, executed 3x" in o.fault for o in resumed)
    # A held line: the service cannot start, says who holds it and exits 74; the next start succeeds.
    for outcome in by_kind["gpio-busy"]:
        assert (outcome.result, outcome.recovered) == ("clean-failure", True), outcome
        holder = outcome.fault.split(" held by ")[1]
        assert outcome.error.startswith("exit 74: ")
        assert f"in use by {holder!r}" in outcome.error
