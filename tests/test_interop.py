"""Interop with Nordic's nrfutil 6.1.7, over real ptys, on both bootloader profiles.

The fixture rows of ../shared/fixtures/README.md run in order on one simulated device: nrfutil uploads
each package to `mcu-updater simulate`, and `mcu-updater flash` does the same on a second device; both
must get exactly the documented outcome, and the devices must end in the documented state.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mcu_updater.dfu.wire import ImageType
from tests.conftest import shared_fixture
from tests.nrfutil import dfu_serial, nrfutil
from tests.simproc import FAST_BAUD, SimulatorProcess, query_inventory, run_cli

pytestmark = [pytest.mark.interop, pytest.mark.timeout(400)]

SUCCESS = None
# (package, extended error the device answers, or SUCCESS), in the order of fixtures/README.md.
SDK_ROWS = [
    ("app_v2_signed.zip", SUCCESS),
    ("app_v1_signed_downgrade.zip", 0x05),
    ("app_v3_hw51_signed.zip", 0x06),
    ("app_v2_unsigned.zip", 0x08),
    ("app_v3_sdreq_A8_signed.zip", 0x07),
    ("bl_v2_signed.zip", SUCCESS),
    ("bl_v2_signed.zip", 0x05),
    ("sd_app_signed.zip", SUCCESS),
    ("app_v2_signed.zip", 0x07),
]
# The reference solution's build: no signature check, versions compared with "not equal".
AZURE_ROWS = [
    ("app_v2_signed.zip", SUCCESS),
    ("app_v1_signed_downgrade.zip", SUCCESS),
    ("app_v3_hw51_signed.zip", 0x06),
    ("app_v2_unsigned.zip", SUCCESS),
    ("app_v2_unsigned.zip", 0x05),
    ("app_v3_sdreq_A8_signed.zip", 0x07),
    ("bl_v2_signed.zip", SUCCESS),
    ("bl_v2_signed.zip", 0x05),
    ("sd_app_signed.zip", SUCCESS),
]
PROFILES = {"sdk": SDK_ROWS, "azure-sample": AZURE_ROWS}


def _check_final_inventory(port: str) -> None:
    inventory = query_inventory(port)
    softdevice = inventory.find(ImageType.SOFTDEVICE)
    application = inventory.find(ImageType.APPLICATION)
    bootloader = inventory.find(ImageType.BOOTLOADER)
    assert softdevice is not None
    assert application is not None
    assert bootloader is not None
    assert softdevice.version == 6001001
    assert (application.version, application.address, application.length) == (3, 0x26000, 61440)
    assert bootloader.version == 2


def _sim_args(profile: str) -> list[str]:
    return ["--profile", profile, "--public-key", str(shared_fixture("key_a_public.pem"))]


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_nrfutil_uploads_to_the_simulator(profile: str, tmp_path: Path) -> None:
    nrfutil()  # built before the simulator starts, so a first build cannot eat into its time
    with SimulatorProcess(tmp_path / "state.json", *_sim_args(profile)) as sim:
        for row, (name, expected) in enumerate(PROFILES[profile], 1):
            done = dfu_serial(shared_fixture(name), sim.port, FAST_BAUD)
            output = done.stdout + done.stderr
            if expected is SUCCESS:
                assert done.returncode == 0, f"row {row} {name}: {output[-800:]}"
                assert "Device programmed" in output
            else:
                assert done.returncode != 0, f"row {row} {name} should fail"
                assert f"Extended Error 0x{expected:02X}" in output, f"row {row} {name}: {output[-800:]}"
            if row == 1:
                application = query_inventory(sim.port).find(ImageType.APPLICATION)
                assert application is not None
                assert (application.version, application.address, application.length) == (2, 0x26000, 61440)
        _check_final_inventory(sim.port)
        summary = sim.stop()
    assert "sha256" in summary.lower()


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_flash_gets_the_same_outcomes(profile: str, tmp_path: Path) -> None:
    with SimulatorProcess(tmp_path / "state.json", *_sim_args(profile)) as sim:
        for row, (name, expected) in enumerate(PROFILES[profile], 1):
            # --force: the device, not our skip logic, must decide here, as it did for nrfutil.
            result = run_cli(
                "flash", str(shared_fixture(name)), "--port", sim.port, "--baud", str(FAST_BAUD), "--force"
            )
            assert "Traceback" not in result.stderr
            if expected is SUCCESS:
                assert result.exit_code == 0, f"row {row} {name}: {result.stderr}"
            else:
                assert result.exit_code == 65, f"row {row} {name}: {result.stdout} {result.stderr}"
                assert f"EXT 0x{expected:02X}" in result.stderr
                assert len(result.stderr.strip().splitlines()) == 1
        _check_final_inventory(sim.port)
        sim.stop()
