"""Render update-run events for people (a progress bar on a TTY, plain lines otherwise) or as NDJSON."""

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
    """Human or JSON output of one run."""

    def __init__(self, *, json_lines: bool, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.json_lines = json_lines
        self.tty = self.stream.isatty() and not json_lines
        self._next_plain = 0.0
        self._bar_open = False

    def emit(self, event: Event) -> None:
        if self.json_lines:
            self._line(json.dumps(event_json(event), separators=(",", ":")))
            return
        self._human(event)

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

    def _human(self, event: Event) -> None:
        match event:
            case Connected(seconds=seconds, mtu=mtu):
                self._line(f"bootloader answered after {seconds:.2f} s (MTU {mtu})")
            case InventoryRead(inventory=inventory):
                if not inventory.known:
                    self._line("device: the bootloader does not report its inventory")
                else:
                    listed = ", ".join(f"{i.kind} {i.version} ({i.length} B)" for i in inventory.images)
                    self._line(f"device: {listed or 'nothing installed'}")
            case Planned(items=items):
                for item in items:
                    self._line(f"  {item.action.value:7} {item.image.label}: {item.reason}")
            case ImageStarted(image=image):
                self._next_plain = 0.0
                self._line(f"sending {image.label}")
            case ImageProgress(progress=p):
                self._progress(p.fraction, p.offset, p.total, p.throughput, p.eta)
            case ImageSent(image=image, seconds=seconds, bytes_resent=resent, retries=retries):
                extra = f", {retries} retries, {resent} B re-sent" if retries else ""
                rate = image.size / seconds if seconds > 0 else 0.0
                self._line(f"sent {image.label} in {seconds:.2f} s ({_kib(rate)}/s{extra})")
            case Activated(image=image, seconds=seconds):
                self._line(f"{image.name} activated; bootloader back after {seconds:.2f} s")
            case Finished(sent=sent, skipped=skipped, seconds=seconds, firmware_bytes=nbytes):
                if not sent:
                    self._line(f"nothing to do: every image is already installed ({seconds:.2f} s)")
                else:
                    rate = nbytes / seconds if seconds > 0 else 0.0
                    names = ", ".join(s.image.name for s in sent)
                    skip = f"; skipped {', '.join(i.image.name for i in skipped)}" if skipped else ""
                    self._line(f"done: {names} ({nbytes} B) in {seconds:.2f} s, {_kib(rate)}/s overall{skip}")

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
