"""Build valid and deliberately broken DFU packages in tests.

Images are made the way nrfutil 6.1.7 makes them (same init-packet fields, boot_validation included),
signed with ``TEST_KEY`` unless told otherwise::

    app = make_image(FwType.APPLICATION, fw_version=3)
    write_package(tmp_path / "app.zip", app)                        # a valid package
    write_package(tmp_path / "bad.zip", replace(app, firmware=flip(app.firmware)))
    write_zip(tmp_path / "evil.zip", [*package_entries(app), Entry("../x", b"")])
    write_pair(tmp_path, app)                                        # app.bin + app.dat, returns app.bin

``zip_bytes`` writes archives byte by byte, so entries may lie about their sizes, repeat names, claim
encryption or carry a prepared deflate stream (``bomb_payload``).
"""

from __future__ import annotations

import json
import random
import struct
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from cryptography.hazmat.primitives.asymmetric import ec
from intelhex import IntelHex

from mcu_updater.dfu.initpacket import (
    FwType,
    HashType,
    InitCommand,
    Signer,
    encode_init_packet,
    image_hash_field,
)
from mcu_updater.dfu.package import MANIFEST_NAME, SD_INFO_OFFSET, SD_MAGIC, SLOTS
from mcu_updater.dfu.packager import BOOT_VALIDATION_CRC
from mcu_updater.dfu.signing import ecdsa_signer

TEST_KEY: Final = ec.generate_private_key(ec.SECP256R1())
HW_VERSION: Final = 52
SD_REQ: Final = (0xAF,)

_SLOT: Final = {kind: slot for slot, kind in SLOTS.items()}
_STEM: Final = {
    FwType.APPLICATION: "app",
    FwType.SOFTDEVICE: "sd",
    FwType.BOOTLOADER: "bl",
    FwType.SOFTDEVICE_BOOTLOADER: "sd_bl",
}
_SD_INFO: Final = struct.Struct("<B3xIIH2xII")


def firmware(size: int = 4096, seed: int = 0) -> bytes:
    """Deterministic random bytes (incompressible, like real code)."""
    return random.Random(seed).randbytes(size)


def softdevice_firmware(
    size: int = 0x9000,
    *,
    fwid: int = 0xB7,
    version: int = 6_001_001,
    end_address: int = 0x26000,
    info_size: int = 0x2C,
    magic: int = SD_MAGIC,
) -> bytes:
    """A fake SoftDevice .bin (from 0x1000) with its info struct at offset 0x2000, like the fixtures'."""
    image = bytearray(firmware(size, seed=7))
    if size >= SD_INFO_OFFSET + _SD_INFO.size:
        _SD_INFO.pack_into(image, SD_INFO_OFFSET, info_size, magic, end_address, fwid, 132, version)
    return bytes(image)


def write_hex(path: Path, *segments: tuple[int, bytes]) -> Path:
    """An Intel HEX file holding each (address, bytes) segment, as a build would write it."""
    hexfile = IntelHex()
    for address, data in segments:
        hexfile.frombytes(data, offset=address)
    hexfile.write_hex_file(str(path))
    return path


def flip(data: bytes, index: int = 0) -> bytes:
    """``data`` with one byte inverted."""
    return data[:index] + bytes([data[index] ^ 0xFF]) + data[index + 1 :]


def init_command(kind: FwType, image: bytes, *, sd_size: int = 0, **fields: Any) -> InitCommand:
    """The InitCommand nrfutil would write for ``image``; ``fields`` override any field afterwards."""
    sizes = {
        FwType.APPLICATION: {"app_size": len(image)},
        FwType.SOFTDEVICE: {"sd_size": len(image)},
        FwType.BOOTLOADER: {"bl_size": len(image)},
        FwType.SOFTDEVICE_BOOTLOADER: {"sd_size": sd_size, "bl_size": len(image) - sd_size},
    }[kind]
    command = InitCommand(
        fw_type=kind,
        fw_version=0xFFFF_FFFF if kind is FwType.SOFTDEVICE else 1,
        hw_version=HW_VERSION,
        sd_req=SD_REQ,
        sd_size=sizes.get("sd_size", 0),
        bl_size=sizes.get("bl_size", 0),
        app_size=sizes.get("app_size", 0),
        hash_type=HashType.SHA256,
        hash=image_hash_field(image),
        extra=BOOT_VALIDATION_CRC,
    )
    return replace(command, **fields)


def retype_signature(dat: bytes, signature_type: int) -> bytes:
    """A signed ``.dat`` with another signature_type (its tail is ``10 <type> 1A 40 <64 B>``)."""
    return dat[:-67] + bytes([signature_type]) + dat[-66:]


@dataclass(frozen=True)
class ImageFiles:
    """One image as a package holds it: manifest slot, .bin and .dat contents and names."""

    slot: str
    firmware: bytes = field(repr=False)
    dat: bytes = field(repr=False)
    bin_name: str
    dat_name: str
    metadata: dict[str, object] | None = None

    def manifest_entry(self) -> dict[str, object]:
        entry: dict[str, object] = {"bin_file": self.bin_name, "dat_file": self.dat_name}
        if self.metadata is not None:
            entry["info_read_only_metadata"] = self.metadata
        return entry


def make_image(
    kind: FwType,
    image: bytes | None = None,
    *,
    key: ec.EllipticCurvePrivateKey | None = TEST_KEY,
    signer: Signer | None = None,
    stem: str | None = None,
    sd_size: int | None = None,
    **fields: Any,
) -> ImageFiles:
    """An image as nrfutil packs it; ``key=None`` leaves it unsigned, ``signer`` overrides the key."""
    default_sd = softdevice_firmware()
    if image is None:
        image = {
            FwType.APPLICATION: firmware(4096, seed=1),
            FwType.SOFTDEVICE: default_sd,
            FwType.BOOTLOADER: firmware(2048, seed=2),
            FwType.SOFTDEVICE_BOOTLOADER: default_sd + firmware(2048, seed=2),
        }[kind]
    if sd_size is None:
        sd_size = len(default_sd) if kind is FwType.SOFTDEVICE_BOOTLOADER else 0
    command = init_command(kind, image, sd_size=sd_size, **fields)
    sign = signer if signer is not None else (ecdsa_signer(key) if key is not None else None)
    stem = stem or _STEM[kind]
    metadata: dict[str, object] | None = None
    if kind is FwType.SOFTDEVICE_BOOTLOADER:
        metadata = {"bl_size": command.bl_size, "sd_size": command.sd_size}
    return ImageFiles(
        slot=_SLOT[kind],
        firmware=image,
        dat=encode_init_packet(command, sign),
        bin_name=f"{stem}.bin",
        dat_name=f"{stem}.dat",
        metadata=metadata,
    )


def manifest(*images: ImageFiles) -> bytes:
    """manifest.json as nrfutil writes it."""
    return json.dumps(
        {"manifest": {image.slot: image.manifest_entry() for image in images}}, indent=4
    ).encode()


@dataclass(frozen=True)
class Entry:
    """A zip entry, written exactly as described (nothing is checked)."""

    name: str
    data: bytes = b""
    deflate: bool = False
    payload: bytes | None = None
    """Bytes stored as the entry's (compressed) data instead of ``data``; the CRC is then 0."""
    declared_size: int | None = None
    """Uncompressed size written in both headers instead of the real one."""
    flags: int = 0
    method: int | None = None
    crc: int | None = None
    """CRC-32 written in both headers instead of the real one (a damaged member)."""


def package_entries(
    *images: ImageFiles,
    manifest_json: bytes | None = None,
    replace_entries: Iterable[Entry] = (),
    drop: Iterable[str] = (),
) -> list[Entry]:
    """The entries of an nrfutil package; some may be replaced by name or dropped."""
    entries = {
        MANIFEST_NAME: Entry(MANIFEST_NAME, manifest(*images) if manifest_json is None else manifest_json)
    }
    for image in images:
        entries[image.bin_name] = Entry(image.bin_name, image.firmware)
        entries[image.dat_name] = Entry(image.dat_name, image.dat)
    entries.update((entry.name, entry) for entry in replace_entries)
    for name in drop:
        del entries[name]
    return list(entries.values())


def deflate(data: bytes) -> bytes:
    """Raw deflate, as zip stores it."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush()


def bomb_payload(size: int, chunk: int = 1 << 20) -> bytes:
    """A raw deflate stream of ``size`` zero bytes (a multiple of ``chunk``), built without producing them."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    # After a full flush the compressor forgets its history, so every chunk encodes to the same bytes.
    block = compressor.compress(bytes(chunk)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return block * (size // chunk) + compressor.flush()


def zip_bytes(entries: Iterable[Entry]) -> bytes:
    """A zip archive holding ``entries`` in order, headers written by hand."""
    body, directory = bytearray(), bytearray()
    count = 0
    for entry in entries:
        name = entry.name.encode()
        stored = (
            entry.payload
            if entry.payload is not None
            else deflate(entry.data)
            if entry.deflate
            else entry.data
        )
        method = entry.method if entry.method is not None else 8 if entry.deflate else 0
        crc = (
            entry.crc if entry.crc is not None else 0 if entry.payload is not None else zlib.crc32(entry.data)
        )
        size = entry.declared_size if entry.declared_size is not None else len(entry.data)
        flags = entry.flags | 0x800
        common = struct.pack("<HHHHIII", flags, method, 0, 0x5821, crc, len(stored), size)
        directory += struct.pack("<IHH", 0x02014B50, 20, 20) + common
        directory += struct.pack("<HHHHHII", len(name), 0, 0, 0, 0, 0, len(body)) + name
        body += struct.pack("<IH", 0x04034B50, 20) + common + struct.pack("<HH", len(name), 0) + name + stored
        count += 1
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, len(directory), len(body), 0)
    return bytes(body + directory + end)


def write_zip(path: Path, entries: Iterable[Entry]) -> Path:
    path.write_bytes(zip_bytes(entries))
    return path


def write_package(path: Path, *images: ImageFiles) -> Path:
    """A valid nrfutil-style package of ``images``."""
    return write_zip(path, package_entries(*images))


def write_pair(directory: Path, image: ImageFiles) -> Path:
    """The image as a bare .bin/.dat pair; returns the .bin path."""
    (directory / image.dat_name).write_bytes(image.dat)
    bin_path = directory / image.bin_name
    bin_path.write_bytes(image.firmware)
    return bin_path


# --- builders of broken packages, for the hostile-input corpus ----------------------------------

Build = Callable[[Path], Path]
"""Writes a package (or some file standing for one) into a folder and returns the path to give."""

APP_IMAGE: Final = make_image(FwType.APPLICATION)
"""The valid application image the builders below damage."""


def zipped(*images: ImageFiles, **entry_options: Any) -> Build:
    """A package of ``images``, with package_entries options (manifest_json, replace_entries, drop)."""
    return lambda d: write_zip(d / "package.zip", package_entries(*images, **entry_options))


def zipped_with(*extra: Entry) -> Build:
    """A valid app package plus ``extra`` entries (or replacements, by name)."""
    return zipped(APP_IMAGE, replace_entries=extra)


def app_with(**fields: Any) -> Build:
    """An app package whose init packet has ``fields`` changed (make_image options)."""
    return zipped(make_image(FwType.APPLICATION, **fields))


def manifest_of(document: str) -> Build:
    """A valid app package with this manifest.json text."""
    return zipped(APP_IMAGE, manifest_json=document.encode())


def raw_file(name: str, data: bytes) -> Build:
    def build(d: Path) -> Path:
        (d / name).write_bytes(data)
        return d / name

    return build


def bare(image: ImageFiles, drop: str = "") -> Build:
    """The image as a .bin/.dat pair, minus the file with suffix ``drop``; returns the other one."""

    def build(d: Path) -> Path:
        bin_path = write_pair(d, image)
        if drop:
            bin_path.with_suffix(drop).unlink()
        return bin_path.with_suffix(".dat" if drop == ".bin" else ".bin")

    return build


def sparse_file(name: str, size: int) -> Build:
    def build(d: Path) -> Path:
        with (d / name).open("wb") as file:
            file.truncate(size)
        return d / name

    return build


def directory(d: Path) -> Path:
    (d / "package.zip").mkdir()
    return d / "package.zip"
