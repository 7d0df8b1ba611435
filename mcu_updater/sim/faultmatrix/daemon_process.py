"""The service in a process of its own, on a `mcu-updater simulate --lines` device: what the
``daemon-killed`` row SIGKILLs and restarts.

``python -m mcu_updater.sim.faultmatrix.daemon_process CONFIG LINES`` runs the code of ``mcu-updater
run`` (``service.make_daemon`` on the configuration: firmware, serial port, policy, state, control
socket, logging), with the target's reset and DFU lines requested from the simulator's line socket
instead of a GPIO chip, and held in reset while the daemon starts, as ``run_service`` holds them.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from mcu_updater import logs
from mcu_updater.config import load_config
from mcu_updater.errors import McuUpdaterError
from mcu_updater.hw.specs import TargetLine
from mcu_updater.service import make_daemon
from mcu_updater.sim.linesock import SocketTargetLines


async def serve(config_path: Path, lines_path: Path) -> int:
    config = load_config(config_path)
    logs.configure_logging(level=config.logging.level.value)
    lines = SocketTargetLines(lines_path, initial={TargetLine.RESET: True})
    try:
        return await make_daemon(config, lines=lines, button=None).serve()
    finally:
        lines.close()


def main() -> int:
    try:
        return asyncio.run(serve(Path(sys.argv[1]), Path(sys.argv[2])))
    except McuUpdaterError as error:
        print(f"mcu-updater run: error: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
