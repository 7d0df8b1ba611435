"""The node_exporter textfile: parsed by prometheus_client's own text-format parser, after real runs."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mcu_updater.metrics import METRICS_FILE, render
from mcu_updater.state import DaemonState, InventoryEntry, RunRecord
from tests.conftest import shared_fixture
from tests.simproc import SimulatorProcess, run_cli
from tests.test_service import write_config

pytestmark = pytest.mark.timeout(120)


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a textfile, keyed by name and sorted labels; fails on any format error."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def test_render_parses_with_help_types_and_escaped_labels() -> None:
    state = DaemonState(
        (InventoryEntry("application", 3), InventoryEntry('odd "kind"\\\n', 7)),
        RunRecord(
            "updated", "2026-11-26T12:00:00+00:00", "2026-11-26T12:00:09+00:00", seconds=8.5, bytes_sent=61440
        ),
        runs=4,
    )
    text = render(state)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["mcu_updater_runs"].type == "counter"
    assert families["mcu_updater_last_run_success"].type == "gauge"
    assert all(f.documentation for f in families.values())
    found = samples(text)
    assert found[("mcu_updater_runs_total", ())] == 4
    assert (
        found[("mcu_updater_last_run_timestamp_seconds", ())] == 1795694409
    )  # date -d 2026-11-26T12:00:09Z +%s
    assert found[("mcu_updater_last_run_success", ())] == 1
    assert found[("mcu_updater_last_run_duration_seconds", ())] == 8.5
    assert found[("mcu_updater_last_run_bytes_sent", ())] == 61440
    assert found[("mcu_updater_installed_info", (("kind", "application"), ("version", "3")))] == 1
    assert found[("mcu_updater_installed_info", (("kind", 'odd "kind"\\\n'), ("version", "7")))] == 1


def test_no_run_yet_gives_only_the_inventory_and_the_counter() -> None:
    found = samples(render(DaemonState((InventoryEntry("softdevice", 6001000),))))
    assert set(found) == {
        ("mcu_updater_runs_total", ()),
        ("mcu_updater_installed_info", (("kind", "softdevice"), ("version", "6001000"))),
    }


def test_each_apply_rewrites_the_textfile(tmp_path: Path) -> None:
    textfiles = tmp_path / "node-exporter"
    textfiles.mkdir()
    extra = f"metrics: {{textfile_dir: {textfiles}}}\n"
    with SimulatorProcess(
        tmp_path / "nrf52.json", "--public-key", str(shared_fixture("key_a_public.pem"))
    ) as sim:
        config = write_config(tmp_path, sim.port, extra)
        package = str(shared_fixture("app_v2_signed.zip"))
        assert run_cli("apply", "--package", package, "--config", str(config)).exit_code == 0
        first = samples((textfiles / METRICS_FILE).read_text())
        refused = str(shared_fixture("app_v3_sdreq_A8_signed.zip"))
        failed = run_cli("apply", "--package", refused, "--config", str(config), "--json")
        second = samples((textfiles / METRICS_FILE).read_text())
    assert first[("mcu_updater_last_run_success", ())] == 1
    assert first[("mcu_updater_last_run_bytes_sent", ())] == 61440
    assert first[("mcu_updater_last_run_exit_code", ())] == 0
    assert first[("mcu_updater_installed_info", (("kind", "application"), ("version", "2")))] == 1
    assert first[("mcu_updater_last_run_duration_seconds", ())] > 0
    assert json.loads(failed.stdout.splitlines()[-1])["exit_code"] == 65
    assert second[("mcu_updater_last_run_success", ())] == 0
    assert second[("mcu_updater_last_run_exit_code", ())] == 65
    assert second[("mcu_updater_runs_total", ())] == 2
    assert (
        second[("mcu_updater_last_run_timestamp_seconds", ())]
        >= first[("mcu_updater_last_run_timestamp_seconds", ())]
    )
    assert [p.name for p in textfiles.iterdir()] == [METRICS_FILE], "no temporary file left for the collector"
    assert stat.S_IMODE((textfiles / METRICS_FILE).stat().st_mode) == 0o644
