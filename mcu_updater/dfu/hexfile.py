"""Firmware files as ``nrfutil pkg generate`` reads them: Intel HEX (through ``intelhex``) or raw .bin.

nrfutil 6.1.7 turns a HEX into the .bin it packs like this, and so do we, so both tools hash and
send the same bytes:

* records in the UICR (0x10000000 and up) and in the MBR (below 0x1000) are dropped;
* the image starts at its lowest remaining address, but never below the end of the MBR: 0x1000, or
  0x3000 when a SoftDevice info struct's magic sits at 0x4004, 0x5004, 0x6004 or 0x7004 (nrfutil's
  test for an S132 2.x/3.x layout);
* it runs to its highest address, rounded up to a whole 32-bit word; gaps and the rounding are
  filled with 0xFF (erased flash).

A .bin is taken as it is, padded with 0xFF to a whole word. A file that is missing raises
InputMissingError (66); one that is not a readable HEX, or holds no firmware, PackageError (65).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Final

from mcu_updater.errors import InputMissingError, PackageError

FIRMWARE_FILE_MAX: Final = 8 * 1024 * 1024
"""A HEX of the nRF52832's whole 512 KiB flash is under 1.5 MiB; anything far beyond is not firmware."""
UICR_START: Final = 0x1000_0000
MBR_END: Final = 0x1000
_LEGACY_MBR_END: Final = 0x3000
_SD_MAGIC: Final = 0x51B1E5DB
_INFO_STRUCT_MAGIC_AT: Final = 0x3004
_LEGACY_MAGIC_AT: Final = (0x4004, 0x5004, 0x6004, 0x7004)
_WORD: Final = 4
_ERASED: Final = 0xFF


def read_firmware(path: Path) -> bytes:
    """The image bytes nrfutil would pack for ``path`` (a .bin as is; anything else read as Intel HEX)."""
    raw = _read(path)
    if path.suffix.lower() == ".bin":
        if not raw:
            raise PackageError(f"firmware file {path} is empty", "give the .bin or .hex your build produced")
        return _pad_to_word(raw)
    return hex_to_bin(raw, source=str(path))


def hex_to_bin(text: bytes, *, source: str = "HEX file") -> bytes:
    """Convert Intel HEX content to the flat image nrfutil makes of it (see the module docstring)."""
    # Imported here so that only `package generate` loads intelhex.
    from intelhex import IntelHex, IntelHexError  # noqa: PLC0415

    hexfile = IntelHex()
    try:
        hexfile.loadhex(io.StringIO(text.decode("ascii")))
    except (IntelHexError, UnicodeDecodeError, ValueError) as exc:
        raise PackageError(
            f"{source} is not a valid Intel HEX file ({_first_line(exc)})",
            "give the .hex your build produced, or a raw image named *.bin",
        ) from exc
    cells: dict[int, int] = {
        address: value for address, value in hexfile.todict().items() if isinstance(address, int)
    }
    kept = {address: value for address, value in cells.items() if MBR_END <= address < UICR_START}
    if not kept:
        where = "only in the MBR or UICR" if cells else "no data at all"
        raise PackageError(
            f"{source} holds {where}; there is no image to package",
            "give the HEX of the application, SoftDevice or bootloader itself",
        )
    start = max(min(kept), _mbr_end(kept))
    end = max(kept) + 1
    if start >= end:
        raise PackageError(
            f"{source}: its data ends at 0x{end:X}, inside the 0x{start:X}-byte MBR region",
            "give the HEX of the application, SoftDevice or bootloader itself",
        )
    image = bytearray([_ERASED]) * (end - start)
    for address, value in kept.items():
        if address >= start:
            image[address - start] = value
    return _pad_to_word(bytes(image))


def _mbr_end(cells: dict[int, int]) -> int:
    def magic_at(address: int) -> bool:
        present = [cells[cell] for cell in range(address, address + _WORD) if cell in cells]
        return len(present) == _WORD and int.from_bytes(bytes(present), "little") == _SD_MAGIC

    if not magic_at(_INFO_STRUCT_MAGIC_AT) and any(magic_at(address) for address in _LEGACY_MAGIC_AT):
        return _LEGACY_MBR_END
    return MBR_END


def _pad_to_word(data: bytes) -> bytes:
    return data + bytes([_ERASED]) * (-len(data) % _WORD)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(FIRMWARE_FILE_MAX + 1)
    except FileNotFoundError as exc:
        raise InputMissingError(f"firmware file {path} does not exist", "check the path") from exc
    except IsADirectoryError as exc:
        raise InputMissingError(f"firmware file {path} is a directory", "give a .hex or .bin file") from exc
    except OSError as exc:
        raise InputMissingError(
            f"firmware file {path} cannot be read ({exc.strerror or exc})", "check the path and permissions"
        ) from exc
    if len(data) > FIRMWARE_FILE_MAX:
        raise PackageError(
            f"firmware file {path} is larger than {FIRMWARE_FILE_MAX} bytes, too large for an nRF52",
            "give the .hex or .bin of one image",
        )
    return data
