"""Jobs an OTA engine asks for (`apply`, `verify`), how they travel, and the result object they end with.

A job carries the package's bytes rather than its path: the daemon (another user, maybe another mount
namespace) need not be able to read the engine's download, and the bytes it validates are exactly the
bytes it flashes and keeps as ``current.zip``.
"""

from __future__ import annotations

import base64
import binascii
import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from mcu_updater.dfu.initpacket import FwType
from mcu_updater.dfu.package import DfuPackage, Image
from mcu_updater.dfu.wire import ImageType
from mcu_updater.errors import DeviceRejectedError, McuUpdaterError, UsageError
from mcu_updater.state import InventoryEntry
from mcu_updater.updater import Inventory

Emit = Callable[[dict[str, Any]], None]
"""Receives each NDJSON record of a job as it happens (progress events, then nothing: the result is
returned)."""

EXIT_DIFFERS: Final = 1
"""`verify`: the device does not run exactly the package's versions."""


class JobKind(enum.StrEnum):
    APPLY = "apply"
    VERIFY = "verify"


@dataclass(frozen=True)
class Job:
    kind: JobKind
    data: bytes
    source: str
    """The package as the caller named it (logs, the run record)."""
    allow_downgrade: bool = False
    """Overrides ``policy.downgrade: deny`` for this job (an engine's rollback)."""
    dry_run: bool = False
    """Validate, read the inventory and plan; send nothing."""

    def to_request(self) -> dict[str, Any]:
        return {
            "command": "job",
            "kind": self.kind.value,
            "package": base64.b64encode(self.data).decode("ascii"),
            "source": self.source,
            "allow_downgrade": self.allow_downgrade,
            "dry_run": self.dry_run,
        }

    @classmethod
    def from_request(cls, request: Mapping[str, Any]) -> Job:
        try:
            return cls(
                kind=JobKind(request["kind"]),
                data=base64.b64decode(request["package"], validate=True),
                source=str(request.get("source", "")),
                allow_downgrade=request.get("allow_downgrade") is True,
                dry_run=request.get("dry_run") is True,
            )
        except (KeyError, ValueError, TypeError, binascii.Error) as exc:
            raise UsageError(f"malformed job request ({exc})", "use `mcu-updater apply` or `verify`") from exc


# --- what the device runs compared with a package -------------------------------------------------


def _expected(image: Image) -> list[tuple[ImageType, int | None]]:
    """The inventory entries (kind, version) the device reports once ``image`` is installed."""
    softdevice = image.softdevice.version if image.softdevice is not None else None
    match image.kind:
        case FwType.APPLICATION:
            return [(ImageType.APPLICATION, image.version)]
        case FwType.SOFTDEVICE:
            return [(ImageType.SOFTDEVICE, softdevice)]
        case FwType.BOOTLOADER:
            return [(ImageType.BOOTLOADER, image.version)]
        case FwType.SOFTDEVICE_BOOTLOADER:
            return [(ImageType.SOFTDEVICE, softdevice), (ImageType.BOOTLOADER, image.version)]
    raise AssertionError(f"unhandled image kind {image.kind!r}")


def differences(package: DfuPackage, inventory: Inventory) -> list[str]:
    """What keeps the device from running exactly the package's versions; empty when it does."""
    if not inventory.known:
        return ["the bootloader does not report its inventory, so its versions cannot be checked"]
    found: list[str] = []
    for image in package.images:
        for kind, wanted in _expected(image):
            name = kind.name.lower()
            installed = inventory.find(kind)
            if installed is None:
                found.append(f"{name}: not on the device, the package has version {wanted}")
            elif wanted is not None and installed.version != wanted:
                found.append(f"{name}: the device runs version {installed.version}, the package has {wanted}")
            elif kind is ImageType.APPLICATION and installed.length != image.size:
                found.append(
                    f"application: the device's version {installed.version} is {installed.length} B, "
                    f"the package's is {image.size} B (another build with the same version)"
                )
    return found


# --- the result object ------------------------------------------------------------------------------


def installed_versions(entries: Iterable[InventoryEntry]) -> dict[str, int]:
    return {entry.type: entry.version for entry in entries}


def result_event(
    exit_code: int,
    message: str,
    installed: Mapping[str, int],
    *,
    hint: str = "",
    device_result: int | None = None,
    device_ext: int | None = None,
    **details: Any,
) -> dict[str, Any]:
    """The last NDJSON record of every job: ``ok`` iff ``exit_code`` is 0."""
    return {
        "event": "result",
        "ok": exit_code == 0,
        "exit_code": exit_code,
        "message": message,
        "hint": hint,
        "device_result": device_result,
        "device_extended_error": device_ext,
        "installed": dict(installed),
        **details,
    }


def error_result(error: McuUpdaterError, installed: Mapping[str, int], **details: Any) -> dict[str, Any]:
    rejected = error if isinstance(error, DeviceRejectedError) else None
    return result_event(
        error.exit_code,
        error.message,
        installed,
        hint=error.hint,
        device_result=rejected.result if rejected else None,
        device_ext=rejected.ext if rejected else None,
        **details,
    )
