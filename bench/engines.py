"""Wall time of one update cycle through each OTA engine's contrib/ integration, on the virtual nRF52.

Run: ``./dev run python bench/engines.py [--repeat N]`` from the repository root, as root with the
engines installed (``./dev test`` installs them). Prints one table; asserts nothing.

A cycle is what the engine does for one update: Mender ``mender install`` + ``mender commit``; SWUpdate
pushing a signed .swu with swupdate-client until the daemon is idle again; RAUC ``rauc install``; ADU
the agent's download, install, apply and is-installed actions. "fresh" cycles send the 60 KiB
application of app_v2_signed.zip to a new simulator; "same" cycles install the package the device
already runs (nothing is sent: the engine's and our processes' overhead). Set-up (simulator, bus,
daemons, building the artifact/image/bundle) is outside the timed part. `mcu-updater apply` alone is
the baseline. The simulator carries the pty at 1 Mbit/s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import shared_fixture  # noqa: E402
from tests.engines import Gateway, Signer, gateway  # noqa: E402
from tests.test_adu import Workflow  # noqa: E402
from tests.test_mender import Mender  # noqa: E402
from tests.test_rauc import rauc_service  # noqa: E402
from tests.test_swupdate import SwupdateDaemon, make_swu  # noqa: E402

PACKAGE = "app_v2_signed.zip"
Cycle = Callable[[], None]
# Given a fresh gateway and a scratch directory: a context that prepares the engine and yields a cycle.
Engine = Callable[[Gateway, Path], AbstractContextManager[Cycle]]


def checked(done: subprocess.CompletedProcess[str]) -> None:
    if done.returncode != 0:
        raise SystemExit(f"{done.args}: exit {done.returncode}\n{done.stdout}{done.stderr}")


@contextmanager
def apply_alone(gw: Gateway, _: Path) -> Iterator[Cycle]:
    command = ["mcu-updater", "apply", "--package", str(shared_fixture(PACKAGE)), "--config", str(gw.config)]
    env = gw.environment()
    yield lambda: checked(subprocess.run(command, env=env, capture_output=True, text=True, check=False))


@contextmanager
def mender(gw: Gateway, scratch: Path) -> Iterator[Cycle]:
    client = Mender.set_up(scratch / "mender", gw)
    artifact = client.artifact("nrf52-app-v2", shared_fixture(PACKAGE))

    def cycle() -> None:
        checked(client("install", str(artifact)))
        checked(client("commit"))

    yield cycle


@contextmanager
def swupdate(gw: Gateway, scratch: Path) -> Iterator[Cycle]:
    signer = Signer.create(scratch)
    image, _ = make_swu(scratch, PACKAGE, signer)
    with SwupdateDaemon(scratch / "swupdate", gw, signer) as daemon:

        def cycle() -> None:
            log = daemon.install(image)
            if not any("SWUPDATE successful" in line for line in log):
                raise SystemExit("\n".join(log))

        yield cycle


@contextmanager
def rauc(gw: Gateway, scratch: Path) -> Iterator[Cycle]:
    with rauc_service(scratch / "rauc", gw) as service:
        bundle = service.bundle(PACKAGE, b"rootfs")
        yield lambda: checked(service.install(bundle))


@contextmanager
def adu(gw: Gateway, scratch: Path) -> Iterator[Cycle]:
    workflow = Workflow.prepare(scratch / "work", gw)
    workflow.download(PACKAGE)

    def cycle() -> None:
        for action, success in (("download", 500), ("install", 600), ("apply", 700), ("is-installed", 900)):
            result = workflow.run(action)
            if result["resultCode"] != success:
                raise SystemExit(f"--action-{action}: {result}")

    yield cycle


ENGINES: dict[str, Engine] = {
    "mcu-updater apply alone": apply_alone,
    "Mender install + commit": mender,
    "SWUpdate .swu via swupdate-client": swupdate,
    "RAUC rauc install": rauc,
    "ADU download+install+apply+is-installed": adu,
}


def timed(cycle: Cycle) -> float:
    start = time.perf_counter()
    cycle()
    return time.perf_counter() - start


def measure(engine: Engine, repeat: int) -> tuple[list[float], list[float]]:
    fresh, same = [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as directory:
            scratch = Path(directory)
            with gateway(scratch / "gateway") as gw, engine(gw, scratch) as cycle:
                fresh.append(timed(cycle))
                same.append(timed(cycle))
    return fresh, same


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=3, help="fresh devices per engine (default 3)")
    args = parser.parse_args()
    print(f"{'engine':42} {'fresh (60 KiB sent)':>20} {'same package':>14}   median of {args.repeat}")
    for name, engine in ENGINES.items():
        fresh, same = measure(engine, args.repeat)
        print(f"{name:42} {statistics.median(fresh):18.2f} s {statistics.median(same):12.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
