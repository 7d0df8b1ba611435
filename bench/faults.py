"""The fault matrix on the virtual nRF52: seeded runs per fault kind and bootloader profile.

Run: ``./dev run python bench/faults.py [--runs N] [--seed S]`` from the repository root. Prints one
row per fault kind and profile; exits 1 if any run bricked the device or a clean failure's next run
did not succeed. See ``mcu_updater/sim/faultmatrix.py`` for what a run is and how it is classified.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mcu_updater.sim.faultmatrix import Cell, build_firmware, run_matrix  # noqa: E402
from mcu_updater.sim.validation import Profile  # noqa: E402

COLUMNS = "{:<22} {:<13} {:>4} {:>4} {:>5} {:>7} {:>9} {:>6}"
HEADER = COLUMNS.format("fault", "profile", "runs", "ok", "clean", "next ok", "re-sent B", "bricks")


def row(cell: Cell) -> str:
    return COLUMNS.format(
        cell.kind,
        cell.profile.value,
        len(cell.outcomes),
        cell.count("success"),
        cell.count("clean-failure"),
        cell.recovered,
        cell.bytes_resent,
        cell.count("brick"),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs per fault kind and profile")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        firmware = {
            Profile.SDK: build_firmware(Path(directory) / "sdk", signed=True),
            Profile.AZURE_SAMPLE: build_firmware(Path(directory) / "azure", signed=False),
        }
        print(f"seed {args.seed}, {args.runs} runs per row; 'ok' = a single run survived the fault")
        print(HEADER)
        cells = asyncio.run(
            run_matrix(firmware, runs=args.runs, seed=args.seed, on_cell=lambda c: print(row(c), flush=True))
        )
    failures = [o for cell in cells for o in cell.outcomes if o.result != "success"]
    for outcome in failures:
        note = "next run ok" if outcome.recovered else "NEXT RUN FAILED"
        where = f"{outcome.kind}/{outcome.profile.value}"
        print(f"  {outcome.result} {where}: {outcome.fault}: {outcome.error} ({note})")
    bad = [o for o in failures if o.result == "brick" or not o.recovered]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
