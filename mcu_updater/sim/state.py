"""What the virtual nRF52 keeps in flash across resets, and the JSON file that holds it between runs.

The real bootloader persists its settings page (versions, bank descriptors, the accepted init packet and
its command progress) only at the moments it writes that page; everything else is RAM. ``FlashState``
is exactly that page as last written, plus the installed SoftDevice's info struct, plus a record of
every image the device validated and activated (simulator bookkeeping for tests and the summary).
Flash *contents* (image bytes) are kept in memory only.
"""

from __future__ import annotations

import copy
import enum
import json
import os
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from mcu_updater.errors import McuUpdaterError, UsageError

FORMAT: Final = "mcu-updater-sim-state/1"
INIT_COMMAND_MAX_SIZE: Final = 256

SD_INFO_OFFSET: Final = 0x2000
SD_MAGIC: Final = 0x51B1E5DB
_SD_INFO: Final = struct.Struct("<B3xIIHxxII")  # size, magic, end, fwid, id, version


class CorruptStateError(UsageError):
    """The --state file exists but is not a simulator state."""


class StateWriteError(McuUpdaterError):
    """The state file could not be written."""

    exit_code = 74


class BankCode(enum.IntEnum):
    INVALID = 0x00
    VALID_APP = 0x01
    VALID_SD = 0xA5
    VALID_BL = 0xAA
    VALID_SD_BL = 0xAC


@dataclass(frozen=True)
class SoftDevice:
    """The fields of a SoftDevice info struct (flash 0x3000 when installed) that DFU looks at."""

    fwid: int
    version: int
    end: int
    """The struct's "size" field: the SoftDevice's end address, MBR included."""
    sd_id: int = 132

    @classmethod
    def from_image(cls, image: bytes) -> SoftDevice | None:
        """Parse the info struct of a SoftDevice image (at offset 0x2000); None without the magic."""
        raw = image[SD_INFO_OFFSET : SD_INFO_OFFSET + _SD_INFO.size].ljust(_SD_INFO.size, b"\xff")
        size, magic, end, fwid, sd_id, version = _SD_INFO.unpack(raw)
        if magic != SD_MAGIC:
            return None
        # Fields past the struct's declared size read as SDM_INFO_FIELD_INVALID (0), as in nrf_sdm.h.
        return cls(
            fwid=fwid, version=version if size > 0x14 else 0, end=end, sd_id=sd_id if size > 0x10 else 0
        )

    def info_struct(self) -> bytes:
        return _SD_INFO.pack(0x2C, SD_MAGIC, self.end, self.fwid, self.sd_id, self.version)


S132_6_1_0: Final = SoftDevice(fwid=0xAF, version=6001000, end=0x26000)


@dataclass
class Bank:
    code: BankCode = BankCode.INVALID
    size: int = 0
    crc: int = 0
    softdevice: SoftDevice | None = None
    """Info struct of the SoftDevice image held in this bank, if it holds one."""


@dataclass
class Progress:
    command_size: int = 0
    command_offset: int = 0
    command_crc: int = 0
    data_object_size: int = 0
    firmware_crc: int = 0
    firmware_crc_last: int = 0
    firmware_offset: int = 0
    firmware_offset_last: int = 0
    update_start_address: int = 0


@dataclass
class Settings:
    """The part of ``nrf_dfu_settings_t`` that serial DFU reads and writes."""

    bootloader_version: int = 1
    app_version: int = 0
    bank_0: Bank = field(default_factory=Bank)
    bank_1: Bank = field(default_factory=Bank)
    sd_size: int = 0
    write_offset: int = 0
    progress: Progress = field(default_factory=Progress)
    init_command: bytes = b"\xff" * INIT_COMMAND_MAX_SIZE


@dataclass
class ImageRecord:
    """One image the device validated (simulator bookkeeping, not device flash)."""

    kind: str
    size: int
    sha256: str
    version: int
    """fw_version of its init packet; for a SoftDevice, the version in its info struct."""
    activated: bool = False


@dataclass
class FlashState:
    settings: Settings = field(default_factory=Settings)
    softdevice: SoftDevice | None = S132_6_1_0
    images: list[ImageRecord] = field(default_factory=list)

    def clone(self) -> FlashState:
        return copy.deepcopy(self)

    def to_json(self) -> dict[str, Any]:
        settings = asdict(self.settings)
        used = max(self.settings.progress.command_size, self.settings.progress.command_offset)
        settings["init_command"] = self.settings.init_command[:used].hex()
        for bank in ("bank_0", "bank_1"):
            settings[bank]["code"] = BankCode(settings[bank]["code"]).name
        return {
            "format": FORMAT,
            "settings": settings,
            "softdevice": asdict(self.softdevice) if self.softdevice else None,
            "images": [asdict(record) for record in self.images],
        }

    @classmethod
    def from_json(cls, data: Any) -> FlashState:
        """Rebuild from ``to_json`` output; KeyError/TypeError/ValueError on anything else."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"format is not {FORMAT}")
        raw = dict(data["settings"])
        command = bytes.fromhex(raw.pop("init_command"))
        settings = Settings(
            **{k: v for k, v in raw.items() if k not in ("bank_0", "bank_1", "progress")},
            bank_0=_bank(raw["bank_0"]),
            bank_1=_bank(raw["bank_1"]),
            progress=Progress(**raw["progress"]),
            init_command=command.ljust(INIT_COMMAND_MAX_SIZE, b"\xff")[:INIT_COMMAND_MAX_SIZE],
        )
        sd = data["softdevice"]
        return cls(
            settings=settings,
            softdevice=SoftDevice(**sd) if sd is not None else None,
            images=[ImageRecord(**record) for record in data["images"]],
        )


def _bank(raw: dict[str, Any]) -> Bank:
    sd = raw.get("softdevice")
    return Bank(
        code=BankCode[raw["code"]],
        size=int(raw["size"]),
        crc=int(raw["crc"]),
        softdevice=SoftDevice(**sd) if sd else None,
    )


class StateFile:
    """The --state JSON file: a missing file is a fresh device; writes are atomic (tmp + rename)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> FlashState:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return FlashState()
        except OSError as exc:
            raise StateWriteError(
                f"cannot read the simulator state {self.path}: {exc.strerror}", "check its permissions"
            ) from exc
        try:
            return FlashState.from_json(json.loads(text))
        except (ValueError, KeyError, TypeError) as exc:
            raise CorruptStateError(
                f"{self.path} is not a simulator state file ({exc})",
                "delete it to start from a fresh device, or name another --state file",
            ) from exc

    def save(self, state: FlashState) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with tmp.open("w", encoding="utf-8") as out:
                json.dump(state.to_json(), out, indent=1)
                out.flush()
                os.fsync(out.fileno())
            tmp.replace(self.path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StateWriteError(
                f"cannot write the simulator state {self.path}: {exc.strerror}",
                "choose a --state path in a writable directory",
            ) from exc
