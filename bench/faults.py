"""The fault matrix on the virtual nRF52: seeded runs per fault kind and bootloader profile.

Run: ``./dev run python bench/faults.py [--runs N] [--seed S] [--kinds K,K]`` from the repository root
(as root: the state-directory rows mount a tmpfs in a private mount namespace). Prints one row per
fault kind and profile, and per kind whether a single run survives the fault by itself; exits 1 if any
run bricked the device or a clean failure's next run did not succeed. See
``mcu_updater/sim/faultmatrix/`` for what a run is and how it is classified.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import structlog

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mcu_updater.sim.faultmatrix import Cell, Outcome, build_firmware  # noqa: E402
from mcu_updater.sim.faultmatrix.matrix import KINDS, run_matrix, within_one_run  # noqa: E402
from mcu_updater.sim.validation import Profile  # noqa: E402

COLUMNS = "| {:<22} | {:<12} | {:>4} | {:>9} | {:>14} | {:>9} | {:>11} | {:>6} |"
HEADER = COLUMNS.format(
    "fault", "profile", "runs", "successes", "clean failures", "recovered", "re-sent B", "bricks"
)


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


def survival(kind: str, cells: list[Cell]) -> str:
    """Whether one run survives the fault by itself, on every profile."""
    mine = [cell for cell in cells if cell.kind == kind]
    ok, runs = sum(c.count("success") for c in mine), sum(len(c.outcomes) for c in mine)
    if not within_one_run(kind):
        finished = all(o.result == "success" or o.recovered for c in mine for o in c.outcomes)
        return (
            f"n/a (the run is killed or cannot start); the next start finishes: {'yes' if finished else 'NO'}"
        )
    return f"yes ({ok}/{runs})" if ok == runs else f"NO ({ok}/{runs})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="runs per fault kind and profile")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated fault kinds")
    args = parser.parse_args()
    kinds = tuple(args.kinds.split(","))
    structlog.configure(logger_factory=structlog.ReturnLoggerFactory())  # the daemon rows' logs
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as directory:
        firmware = {
            Profile.SDK: build_firmware(Path(directory) / "sdk", signed=True),
            Profile.AZURE_SAMPLE: build_firmware(Path(directory) / "azure", signed=False),
        }
        cells = asyncio.run(
            run_matrix(
                firmware,
                runs=args.runs,
                seed=args.seed,
                kinds=kinds,
                on_cell=lambda c: print(f"done: {c.kind} {c.profile.value}", file=sys.stderr, flush=True),
            )
        )
    print(f"seed {args.seed}, {args.runs} runs per row, {time.monotonic() - started:.0f} s")
    print(HEADER)
    print("|" + "|".join("-" * len(part) for part in HEADER.split("|")[1:-1]) + "|")
    for cell in cells:
        print(row(cell))
    print("\nsingle run survives the fault by itself:")
    for kind in kinds:
        print(f"  {kind:<22} {survival(kind, cells)}")
    for kind in ("daemon-killed", "daemon-killed-no-lines"):
        killed = [o for cell in cells if cell.kind == kind for o in cell.outcomes]
        if killed:
            late = sum("complete when the service died" in o.fault for o in killed)
            print(f"  {kind}: {len(killed) - late} of {len(killed)} kills interrupted an image (resumed)")
    failures = [o for cell in cells for o in cell.outcomes if o.result != "success"]
    if failures:
        print("\nruns that did not succeed by themselves (count, then the first one's fault and message):")
    groups: dict[tuple[str, str, str, bool], list[Outcome]] = {}
    for outcome in failures:
        groups.setdefault(
            (outcome.kind, outcome.profile.value, outcome.result, outcome.recovered), []
        ).append(outcome)
    for (kind, profile, result, recovered), group in groups.items():
        note = "next run ok" if recovered else "NEXT RUN FAILED"
        first = group[0]
        print(f"  {len(group)} x {result} {kind}/{profile} ({note}), e.g. {first.fault}: {first.error}")
    bad = [o for o in failures if o.result == "brick" or not o.recovered]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
