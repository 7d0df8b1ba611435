"""Render update-run events for people (a progress bar on a TTY, plain lines otherwise) or as NDJSON.

People see what the NDJSON says: both are drawn from the same record (``event_json``), so a job the
daemon streams back as records reads exactly like a `flash` run."""

from __future__ import annotations

import json
import sys
from typing import Any, Final, TextIO

from mcu_updater.dfu.package import Image
from mcu_updater.updater import (
    Activated,
    Connected,
    Event,
    Finished,
    ImageProgress,
    ImageSent,
    ImageStarted,
    InventoryRead,
    Planned,
)

BAR_WIDTH: Final = 28
PLAIN_STEP: Final = 0.1  # a plain progress line every 10 %


def _kib(nbytes: float) -> str:
    return f"{nbytes / 1024:.1f} KiB"


def _image_json(image: Image) -> dict[str, Any]:
    return {
        "name": image.name,
        "type": image.kind.name.lower(),
        "version": image.version,
        "size": image.size,
        "sha256": image.sha256.hex(),
        "label": image.label,
    }


def event_json(event: Event) -> dict[str, Any]:
    """One NDJSON record per event: stable keys, machine-friendly units (bytes, seconds)."""
    match event:
        case Connected(seconds=seconds, mtu=mtu):
            return {"event": "connected", "ready_after_s": round(seconds, 3), "mtu": mtu}
        case InventoryRead(inventory=inventory):
            return {
                "event": "inventory",
                "known": inventory.known,
                "images": [
                    {"type": i.kind, "version": i.version, "address": i.address, "length": i.length}
                    for i in inventory.images
                ],
            }
        case Planned(items=items):
            return {
                "event": "plan",
                "images": [
                    {**_image_json(item.image), "action": item.action.value, "reason": item.reason}
                    for item in items
                ],
            }
        case ImageStarted(image=image):
            return {"event": "image_started", **_image_json(image)}
        case ImageProgress(progress=p):
            return {
                "event": "progress",
                "image": p.image,
                "phase": p.phase,
                "offset": p.offset,
                "total": p.total,
                "objects_done": p.objects_done,
                "objects_total": p.objects_total,
                "bytes_per_s": round(p.throughput, 1),
                "eta_s": round(p.eta, 2) if p.eta is not None else None,
                "bytes_resent": p.bytes_resent,
                "retries": p.retries,
            }
        case ImageSent(image=image, seconds=seconds, bytes_resent=resent, retries=retries):
            return {
                "event": "image_sent",
                **_image_json(image),
                "seconds": round(seconds, 3),
                "bytes_resent": resent,
                "retries": retries,
            }
        case Activated(image=image, seconds=seconds):
            return {"event": "activated", "name": image.name, "seconds": round(seconds, 3)}
        case Finished(sent=sent, skipped=skipped, seconds=seconds, firmware_bytes=nbytes):
            return {
                "event": "finished",
                "result": "success",
                "sent": [s.image.name for s in sent],
                "skipped": [item.image.name for item in skipped],
                "firmware_bytes": nbytes,
                "seconds": round(seconds, 3),
                "bytes_per_s": round(nbytes / seconds, 1) if seconds > 0 else None,
            }
    raise AssertionError(f"unhandled event {event!r}")


class Renderer:
    """Human or JSON output of one run's records: its events', and those a job adds (``accepted``,
    ``waiting``, ``retrying``)."""

    def __init__(self, *, json_lines: bool, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.json_lines = json_lines
        self.tty = self.stream.isatty() and not json_lines
        self._next_plain = 0.0
        self._bar_open = False

    def emit(self, event: Event) -> None:
        self.record(event_json(event))

    def record(self, record: dict[str, Any]) -> None:
        if self.json_lines:
            self._line(json.dumps(record, separators=(",", ":")))
        else:
            self._human(record)

    def error(self, record: dict[str, Any]) -> None:
        """The failure record in JSON mode (the one-line message goes to stderr either way)."""
        if self.json_lines:
            self._line(json.dumps({"event": "finished", "result": "failed", **record}))

    def _line(self, text: str) -> None:
        if self._bar_open:
            self.stream.write("\n")
            self._bar_open = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def _human(self, r: dict[str, Any]) -> None:
        match r["event"]:
            case "connected":
                self._line(f"bootloader answered after {r['ready_after_s']:.2f} s (MTU {r['mtu']})")
            case "inventory" if not r["known"]:
                self._line("device: the bootloader does not report its inventory")
            case "inventory":
                listed = ", ".join(f"{i['type']} {i['version']} ({i['length']} B)" for i in r["images"])
                self._line(f"device: {listed or 'nothing installed'}")
            case "plan":
                for item in r["images"]:
                    self._line(f"  {item['action']:7} {item['label']}: {item['reason']}")
            case "image_started":
                self._next_plain = 0.0
                self._line(f"sending {r['label']}")
            case "progress":
                fraction = r["offset"] / r["total"] if r["total"] else 1.0
                self._progress(fraction, r["offset"], r["total"], r["bytes_per_s"], r["eta_s"])
            case "image_sent":
                extra = f", {r['retries']} retries, {r['bytes_resent']} B re-sent" if r["retries"] else ""
                rate = r["size"] / r["seconds"] if r["seconds"] > 0 else 0.0
                self._line(f"sent {r['label']} in {r['seconds']:.2f} s ({_kib(rate)}/s{extra})")
            case "activated":
                self._line(f"{r['name']} activated; bootloader back after {r['seconds']:.2f} s")
            case "finished" if not r["sent"]:
                self._line(f"nothing to do: every image is already installed ({r['seconds']:.2f} s)")
            case "finished":
                skip = f"; skipped {', '.join(r['skipped'])}" if r["skipped"] else ""
                self._line(
                    f"done: {', '.join(r['sent'])} ({r['firmware_bytes']} B) in {r['seconds']:.2f} s, "
                    f"{_kib(r['bytes_per_s'] or 0.0)}/s overall{skip}"
                )
            case "accepted":
                later = ", after its current run" if r["queued"] else ""
                self._line(f"handed to the running daemon{later}")
            case "waiting" | "retrying":
                self._line(str(r["message"]))

    def _progress(self, fraction: float, offset: int, total: int, rate: float, eta: float | None) -> None:
        eta_text = f"ETA {eta:.0f} s" if eta is not None else "ETA --"
        figures = f"{fraction:4.0%} {_kib(offset)}/{_kib(total)} {_kib(rate)}/s {eta_text}"
        if self.tty:
            filled = int(BAR_WIDTH * fraction)
            self.stream.write(f"\r  [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {figures}\x1b[K")
            self.stream.flush()
            self._bar_open = True
        elif fraction >= self._next_plain or fraction >= 1.0:
            self._next_plain = fraction + PLAIN_STEP
            self._line(f"  {figures}")
