"""Metrics for fleet dashboards: a node_exporter textfile collector file, rewritten after every run.

``metrics.textfile_dir`` names the collector's directory (node_exporter
``--collector.textfile.directory``); the file is ``mcu_updater.prom``, written to a dot-named temporary
file and renamed, so the collector never reads half a file (it reads ``*.prom`` only). Prometheus text
exposition format 0.0.4: HELP and TYPE lines, then samples; label values escaped.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mcu_updater.state import DaemonState, atomic_write

METRICS_FILE: Final = "mcu_updater.prom"
PREFIX: Final = "mcu_updater_"


@dataclass(frozen=True)
class _Family:
    name: str
    kind: str
    help: str
    samples: tuple[tuple[dict[str, str], float], ...]


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _families(state: DaemonState) -> list[_Family]:
    families = [
        _Family(
            "runs_total",
            "counter",
            "Update runs recorded since the state directory was created.",
            (({}, state.runs),),
        ),
        _Family(
            "installed_info",
            "gauge",
            "Firmware the nRF52 reported at its last inventory read (1 per image).",
            tuple(({"kind": entry.type, "version": str(entry.version)}, 1) for entry in state.inventory),
        ),
    ]
    run = state.last_run
    if run is None:
        return families
    finished = dt.datetime.fromisoformat(run.finished).timestamp()
    last: list[tuple[str, str, float]] = [
        ("timestamp_seconds", "Unix time the last update run finished.", finished),
        ("success", "1 if the last update run left the nRF52 up to date, else 0.", run.result != "failed"),
        ("duration_seconds", "Wall time of the last update run.", run.seconds),
        ("bytes_sent", "Firmware bytes the last update run sent, re-sent bytes included.", run.bytes_sent),
        ("exit_code", "Exit code of the last update run (0 success; see mcu-updater --help).", run.exit_code),
    ]
    families += [
        _Family(f"last_run_{name}", "gauge", text, (({}, float(value)),)) for name, text, value in last
    ]
    return families


def render(state: DaemonState) -> str:
    """The textfile's content for ``state``."""
    lines: list[str] = []
    for family in _families(state):
        name = PREFIX + family.name
        lines += [f"# HELP {name} {_escape_help(family.help)}", f"# TYPE {name} {family.kind}"]
        for labels, value in family.samples:
            shown = ",".join(f'{key}="{_escape_label(text)}"' for key, text in labels.items())
            lines.append(f"{name}{{{shown}}} {_number(value)}" if shown else f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"


def write_metrics(directory: Path, state: DaemonState) -> None:
    """Replace the textfile atomically; world-readable, as node_exporter runs as its own user."""
    atomic_write(directory / METRICS_FILE, render(state).encode(), mode=0o644)
