"""DFU packages: an nrfutil ``.zip`` or a bare ``.bin``/``.dat`` pair, validated into images in send order.

``load_package`` checks everything a host can know before talking to a device, so no byte is sent
from a package the bootloader would refuse or that could harm the gateway. Pure and synchronous
(callers run it in a thread). Decisions where nrfutil and the SDK are silent:

* zip entries are never extracted; names that could escape a folder (``..``, absolute, backslash,
  drive letter) still make the whole package suspect and are refused;
* every entry's declared size is checked against its limit *before* it is opened, and it is read
  through a bounded reader, so a zip bomb or a lying header costs at most a few hundred KiB;
* entries the manifest does not name are tolerated, never read, and listed in
  ``DfuPackage.ignored_entries`` so the caller can mention them;
* a bare pair's image type comes from its init packet.
"""

from __future__ import annotations

import enum
import hashlib
import io
import json
import re
import struct
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from mcu_updater.dfu.initpacket import (
    INIT_PACKET_MAX,
    SIGNATURE_SIZE,
    FwType,
    HashType,
    InitPacket,
    SignatureType,
    decode_init_packet,
)
from mcu_updater.errors import InputMissingError, PackageError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

PACKAGE_FILE_MAX: Final = 4 * 1024 * 1024
MANIFEST_MAX: Final = 64 * 1024
FIRMWARE_MAX: Final = 512 * 1024
"""nRF52832 flash: no image can be larger."""
BOOTLOADER_MAX: Final = 0x6000
"""Bootloader region of the SDK 15.2 pca10040 bootloader; a larger bl_size gets plain 0x04."""
ENTRIES_MAX: Final = 32
COMPRESSION_RATIO_MAX: Final = 100
"""Real firmware deflates a few times over; only a near-constant fill (a bomb) goes beyond this."""
# Small entries cannot hurt however well they compress (a whitespace-padded manifest does).
_RATIO_FLOOR: Final = 4096

MANIFEST_NAME: Final = "manifest.json"
SD_INFO_OFFSET: Final = 0x2000
SD_MAGIC: Final = 0x51B1E5DB
_SD_MBR_SIZE: Final = 0x1000
_FLASH_PAGE: Final = 0x1000
# nrf_sdm.h: size byte, magic, end address (incl. MBR), FWID (u16 + pad), SD id, version.
_SD_INFO: Final = struct.Struct("<B3xIIH2xII")
_SD_INFO_MIN_SIZE: Final = 0x14
FWID_NEVER_MATCHES: Final = 0xFFFE

SLOTS: Final = {
    "softdevice_bootloader": FwType.SOFTDEVICE_BOOTLOADER,
    "softdevice": FwType.SOFTDEVICE,
    "bootloader": FwType.BOOTLOADER,
    "application": FwType.APPLICATION,
}
"""Manifest keys in send order."""
_SLOT_OF: Final = {kind: slot for slot, kind in SLOTS.items()}
_SEND_ORDER: Final = {kind: index for index, kind in enumerate(SLOTS.values())}
_COMBINATIONS: Final = frozenset(
    frozenset(slots)
    for slots in (
        {"application"},
        {"softdevice"},
        {"bootloader"},
        {"softdevice_bootloader"},
        {"softdevice_bootloader", "application"},
        {"softdevice", "application"},
    )
)
_SIZE_FIELD: Final = {
    FwType.APPLICATION: "app_size",
    FwType.SOFTDEVICE: "sd_size",
    FwType.BOOTLOADER: "bl_size",
    FwType.SOFTDEVICE_BOOTLOADER: "sd_size + bl_size",
}
_NEEDS_FW_VERSION: Final = frozenset({FwType.APPLICATION, FwType.BOOTLOADER, FwType.SOFTDEVICE_BOOTLOADER})
_HAS_BOOTLOADER: Final = frozenset({FwType.BOOTLOADER, FwType.SOFTDEVICE_BOOTLOADER})
_ZIP_FLAG_ENCRYPTED: Final = 0x01 | 0x40
_DRIVE: Final = re.compile(r"^[A-Za-z]:")
# Everything zipfile raises on a damaged archive (encryption and odd methods are refused by header first).
_ZIP_ERRORS: Final = (
    zipfile.BadZipFile,
    zipfile.LargeZipFile,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
    struct.error,
    NotImplementedError,
    OverflowError,
)

_REBUILD: Final = "rebuild the package with nrfutil pkg generate"
_GIVE_PACKAGE: Final = (
    "give an nrfutil DFU package (.zip), or a .bin with its .dat of the same name beside it"
)
_SD_HINT: Final = (
    "build the package from a genuine SoftDevice hex (nrfutil pkg generate --softdevice s132_...hex)"
)


def format_sd_version(version: int) -> str:
    """SoftDevice version as written in its info struct (6001001) → "6.1.1"."""
    return f"{version // 1_000_000}.{version // 1000 % 1000}.{version % 1000}"


@dataclass(frozen=True)
class SoftDeviceInfo:
    """The SoftDevice info struct an SD image carries at offset 0x2000 (flash 0x3000)."""

    fwid: int
    version: int
    end_address: int
    sd_id: int

    @classmethod
    def parse(cls, firmware: bytes) -> SoftDeviceInfo:
        """Read the info struct from a SoftDevice image (MBR stripped, as nrfutil's .bin is)."""
        if len(firmware) < SD_INFO_OFFSET + _SD_INFO.size:
            raise PackageError(
                f"SoftDevice image is {len(firmware)} bytes, too short to hold the SoftDevice info struct "
                f"at offset 0x{SD_INFO_OFFSET:X}",
                _SD_HINT,
            )
        size, magic, end_address, fwid, sd_id, version = _SD_INFO.unpack_from(firmware, SD_INFO_OFFSET)
        if magic != SD_MAGIC:
            raise PackageError(
                f"no SoftDevice info struct at offset 0x{SD_INFO_OFFSET:X} "
                f"(magic 0x{magic:08X}, expected 0x{SD_MAGIC:08X})",
                _SD_HINT,
            )
        if size <= _SD_INFO_MIN_SIZE:
            raise PackageError(
                f"SoftDevice info struct size 0x{size:02X} is too small to carry a version "
                f"(must exceed 0x{_SD_INFO_MIN_SIZE:02X})",
                _SD_HINT,
            )
        return cls(fwid=fwid, version=version, end_address=end_address, sd_id=sd_id)

    @property
    def version_text(self) -> str:
        return format_sd_version(self.version)

    @property
    def label(self) -> str:
        return f"SoftDevice {self.version_text} (FWID 0x{self.fwid:02X})"


@dataclass(frozen=True)
class Image:
    """One validated firmware image with its init packet."""

    kind: FwType
    name: str
    """The manifest key ("application", "softdevice", "bootloader", "softdevice_bootloader")."""
    firmware: bytes = field(repr=False)
    init_packet: bytes = field(repr=False)
    init: InitPacket = field(repr=False)
    version: int | None
    """fw_version for APP/BL/SD+BL (the bootloader's for SD+BL); the info-struct version for an SD."""
    softdevice: SoftDeviceInfo | None = None
    """The SoftDevice in an SD or SD+BL image."""
    bin_file: str = ""
    dat_file: str = ""

    @property
    def size(self) -> int:
        return len(self.firmware)

    @property
    def sha256(self) -> bytes:
        return hashlib.sha256(self.firmware).digest()

    @property
    def is_signed(self) -> bool:
        return self.init.is_signed

    @property
    def hw_version(self) -> int | None:
        return self.init.command.hw_version

    @property
    def sd_req(self) -> tuple[int, ...]:
        return self.init.command.sd_req

    @property
    def replaces_softdevice(self) -> bool:
        """An application the bootloader installs by erasing the SoftDevice (sd_req empty or 0x00 first)."""
        sd_req = self.init.command.sd_req
        return self.kind is FwType.APPLICATION and (not sd_req or sd_req[0] == 0)

    @property
    def label(self) -> str:
        """Short description for logs, e.g. "application v3 (61440 B)"."""
        if self.kind is FwType.SOFTDEVICE and self.softdevice is not None:
            return (
                f"softdevice {self.softdevice.version_text} FWID 0x{self.softdevice.fwid:02X} ({self.size} B)"
            )
        with_sd = f" with {self.softdevice.label}" if self.softdevice is not None else ""
        return f"{self.name} v{self.version}{with_sd} ({self.size} B)"


@dataclass(frozen=True)
class DfuPackage:
    """A fully validated package: its images in the order they must be sent."""

    path: Path
    images: tuple[Image, ...]
    ignored_entries: tuple[str, ...] = ()
    """Zip entries the manifest does not name (tolerated, never read)."""

    @property
    def is_signed(self) -> bool:
        return all(image.is_signed for image in self.images)

    @property
    def replaces_softdevice(self) -> bool:
        return any(image.replaces_softdevice for image in self.images)


@dataclass(frozen=True)
class _Files:
    """The raw bytes of one image as found in the package, before validation."""

    slot: str | None
    bin_name: str
    dat_name: str
    firmware: bytes
    dat: bytes
    metadata: dict[str, object] | None = None


@dataclass(frozen=True)
class _Policy:
    public_key: ec.EllipticCurvePublicKey | None
    require_signature: bool
    hw_version: int | None


def load_package(
    path: Path,
    *,
    public_key: ec.EllipticCurvePublicKey | None = None,
    require_signature: bool = False,
    hw_version: int | None = None,
) -> DfuPackage:
    """Read and validate a package; raise PackageError (or InputMissingError) naming the first problem."""
    ignored: tuple[str, ...] = ()
    if path.suffix.lower() in (".bin", ".dat"):
        found = [_read_pair(path)]
    else:
        found, ignored = _read_zip(path)
    policy = _Policy(public_key, require_signature, hw_version)
    images = sorted((_validate(path, files, policy) for files in found), key=lambda i: _SEND_ORDER[i.kind])
    _check_softdevice_then_app(path, images)
    return DfuPackage(path=path, images=tuple(images), ignored_entries=ignored)


def _read_file(path: Path, limit: int, what: str) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(limit + 1)
    except FileNotFoundError as exc:
        raise InputMissingError(f"{what} {path} does not exist", "check the path") from exc
    except IsADirectoryError as exc:
        raise InputMissingError(f"{what} {path} is a directory, not a file", _GIVE_PACKAGE) from exc
    except OSError as exc:
        raise InputMissingError(
            f"{what} {path} cannot be read ({exc.strerror or exc})", "check the path and its permissions"
        ) from exc
    if len(data) > limit:
        raise PackageError(f"{what} {path} is larger than {limit} bytes, the most it can be", _REBUILD)
    return data


def _read_pair(path: Path) -> _Files:
    is_bin = path.suffix.lower() == ".bin"
    other_suffix = ".dat" if is_bin else ".bin"
    other = path.with_suffix(other_suffix.upper() if path.suffix.isupper() else other_suffix)
    bin_path, dat_path = (path, other) if is_bin else (other, path)
    if path.is_file() and not other.exists():
        raise InputMissingError(
            f"{path.name} needs {other.name} beside it (a bare image is a .bin and a .dat of the same name)",
            _GIVE_PACKAGE,
        )
    return _Files(
        slot=None,
        bin_name=bin_path.name,
        dat_name=dat_path.name,
        firmware=_read_file(bin_path, FIRMWARE_MAX, "firmware"),
        dat=_read_file(dat_path, INIT_PACKET_MAX, "init packet"),
    )


def _read_zip(path: Path) -> tuple[list[_Files], tuple[str, ...]]:
    data = _read_file(path, PACKAGE_FILE_MAX, "package")
    if not data:
        raise PackageError(f"package {path.name} is empty", _GIVE_PACKAGE)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except _ZIP_ERRORS as exc:
        raise PackageError(f"{path.name} is not a valid zip archive ({exc})", _GIVE_PACKAGE) from exc
    with archive:
        entries = _check_entries(path, archive)
        slots = _read_manifest(path, archive, entries)
        found = [
            _Files(
                slot=slot,
                bin_name=bin_name,
                dat_name=dat_name,
                firmware=_read_entry(path, archive, entries[bin_name], FIRMWARE_MAX, f"{slot} firmware"),
                dat=_read_entry(path, archive, entries[dat_name], INIT_PACKET_MAX, f"{slot} init packet"),
                metadata=metadata,
            )
            for slot, (bin_name, dat_name, metadata) in slots.items()
        ]
    referenced = {MANIFEST_NAME} | {name for files in found for name in (files.bin_name, files.dat_name)}
    return found, tuple(sorted(set(entries) - referenced))


def _unsafe_name(name: str) -> str | None:
    if "\\" in name:
        return "contains a backslash"
    if name.startswith("/"):
        return "is an absolute path"
    if _DRIVE.match(name):
        return "starts with a drive letter"
    if ".." in name.split("/"):
        return "climbs out of its folder with '..'"
    return None


def _check_entries(package: Path, archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Judge every entry by its central-directory header alone, without decompressing anything."""
    infos = archive.infolist()
    if len(infos) > ENTRIES_MAX:
        raise PackageError(
            f"{package.name} has {len(infos)} entries; a DFU package has at most 5 (limit {ENTRIES_MAX})",
            _REBUILD,
        )
    entries: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        name = info.filename
        where = f"{package.name}: entry {name!r}"
        problem = _unsafe_name(name)
        if problem is not None:
            raise PackageError(f"{where} {problem}", f"refusing a package with unsafe file names; {_REBUILD}")
        if name in entries:
            raise PackageError(f"{where} appears twice", _REBUILD)
        if info.flag_bits & _ZIP_FLAG_ENCRYPTED:
            raise PackageError(f"{where} is encrypted", f"DFU packages are not encrypted; {_REBUILD}")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise PackageError(
                f"{where} uses compression method {info.compress_type}; only stored and deflate are known",
                _REBUILD,
            )
        if info.file_size > FIRMWARE_MAX:
            raise PackageError(
                f"{where} declares {info.file_size} bytes uncompressed, more than the {FIRMWARE_MAX} any "
                "DFU package entry can need",
                "refusing it unread (possibly a zip bomb); check where the package came from",
            )
        if info.file_size > _RATIO_FLOOR and info.file_size > COMPRESSION_RATIO_MAX * info.compress_size:
            raise PackageError(
                f"{where} has a compression ratio of {info.file_size // max(info.compress_size, 1)}:1, "
                f"beyond the {COMPRESSION_RATIO_MAX}:1 real firmware reaches",
                "refusing it unread (possibly a zip bomb); check where the package came from",
            )
        entries[name] = info
    return entries


def _read_entry(
    package: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int, what: str
) -> bytes:
    where = f"{package.name}: {what} {info.filename!r}"
    if info.file_size > limit:
        raise PackageError(f"{where} is {info.file_size} bytes; it can be at most {limit}", _REBUILD)
    try:
        with archive.open(info) as stream:
            data = stream.read(limit + 1)
    except _ZIP_ERRORS as exc:
        raise PackageError(f"{where} is corrupt or does not match its header ({exc})", _REBUILD) from exc
    if len(data) != info.file_size:
        raise PackageError(
            f"{where} holds {len(data)} bytes but does not match its header, which declares {info.file_size}",
            _REBUILD,
        )
    return data


def _no_duplicate_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    result: dict[str, object] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"key {key!r} appears twice")
        result[key] = value
    return result


_Slots = dict[str, tuple[str, str, dict[str, object] | None]]


def _read_manifest(package: Path, archive: zipfile.ZipFile, entries: dict[str, zipfile.ZipInfo]) -> _Slots:
    """The images the manifest names: slot → (bin name, dat name, info_read_only_metadata)."""
    info = entries.get(MANIFEST_NAME)
    if info is None:
        raise PackageError(f"{package.name} has no {MANIFEST_NAME}", _GIVE_PACKAGE)
    raw = _read_entry(package, archive, info, MANIFEST_MAX, "manifest")
    where = f"{package.name}: {MANIFEST_NAME}"
    try:
        document: object = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys)
    except (ValueError, RecursionError) as exc:
        raise PackageError(f"{where} is not valid JSON ({exc})", _REBUILD) from exc
    if not isinstance(document, dict):
        raise PackageError(f"{where} is not a JSON object", _REBUILD)
    images = document.get("manifest")
    if not isinstance(images, dict):
        raise PackageError(f'{where} has no "manifest" object', _REBUILD)
    unknown = sorted(set(images) - set(SLOTS))
    if unknown:
        raise PackageError(
            f"{where} names unknown image {', '.join(map(repr, unknown))}; SDK 15.2 knows {', '.join(SLOTS)}",
            _REBUILD,
        )
    if not images:
        raise PackageError(f"{where} lists no images", _REBUILD)
    if frozenset(images) not in _COMBINATIONS:
        raise PackageError(
            f"{where} combines {' + '.join(sorted(images))}; nrfutil packages hold APP, SD, BL, SD+BL, "
            "SD+BL+APP or SD+APP",
            "split it into packages nrfutil pkg generate accepts",
        )
    slots: _Slots = {}
    for slot, entry in images.items():
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("bin_file"), str)
            and isinstance(entry.get("dat_file"), str)
        ):
            raise PackageError(f'{where}: "{slot}" needs string "bin_file" and "dat_file"', _REBUILD)
        bin_name, dat_name = entry["bin_file"], entry["dat_file"]
        metadata = entry.get("info_read_only_metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise PackageError(f'{where}: "{slot}" info_read_only_metadata is not an object', _REBUILD)
        for name in (bin_name, dat_name):
            if name not in entries:
                raise PackageError(
                    f'{where} names {name!r} for "{slot}", but the package has no such entry', _REBUILD
                )
        slots[slot] = (bin_name, dat_name, metadata)
    return slots


@contextmanager
def _prefixed(where: str) -> Iterator[None]:
    """Name the package entry in errors raised by code that does not know it."""
    try:
        yield
    except PackageError as exc:
        raise PackageError(f"{where}: {exc.message}", exc.hint) from exc


def _enum_name(kind: type[enum.IntEnum], value: int | None) -> str:
    return kind(value).name if value is not None and value in kind._value2member_map_ else str(value)


def _align_page(address: int) -> int:
    return -(-address // _FLASH_PAGE) * _FLASH_PAGE


def _validate(package: Path, files: _Files, policy: _Policy) -> Image:
    """Check one image as the bootloader would (§8), plus what only the host can see (hash, sizes)."""
    dat_where = f"{package.name}: {files.slot or 'init packet'} {files.dat_name}"
    with _prefixed(dat_where):
        init = decode_init_packet(files.dat)
    command = init.command
    kind = command.fw_type
    if kind is None:
        raise PackageError(
            f"{dat_where} has no valid firmware type (the device would answer EXT 0x04)", _REBUILD
        )
    slot = _SLOT_OF[kind]
    if files.slot is not None and files.slot != slot:
        raise PackageError(
            f"{dat_where} is an init packet of type {kind.name} in the {files.slot!r} slot", _REBUILD
        )
    dat_where = f"{package.name}: {slot} {files.dat_name}"
    bin_where = f"{package.name}: {slot} {files.bin_name}"
    firmware = files.firmware

    if not firmware:
        raise PackageError(f"{bin_where} is empty", _REBUILD)
    if len(firmware) % 4:
        raise PackageError(
            f"{bin_where} is {len(firmware)} bytes, not a multiple of 4 (the device drops partial words)",
            _REBUILD,
        )
    if command.image_size != len(firmware):
        raise PackageError(
            f"{dat_where}: {_SIZE_FIELD[kind]} says {command.image_size} bytes but {files.bin_name} holds "
            f"{len(firmware)}",
            f"the .bin and .dat do not belong together; {_REBUILD}",
        )
    if kind in _HAS_BOOTLOADER and (command.bl_size or 0) > BOOTLOADER_MAX:
        raise PackageError(
            f"{dat_where}: bl_size {command.bl_size} exceeds the 0x{BOOTLOADER_MAX:X}-byte bootloader region "
            "(the device would answer 0x04)",
            "shrink the bootloader",
        )
    _check_hash(command.hash_type, command.hash, firmware, dat_where, files.bin_name)
    if kind in _NEEDS_FW_VERSION and command.fw_version is None:
        raise PackageError(
            f"{dat_where} has no fw_version, which a {slot} needs (the device would answer EXT 0x04)",
            f"{_REBUILD} --{'application' if kind is FwType.APPLICATION else 'bootloader'}-version N",
        )
    _check_target(command.hw_version, command.sd_req, dat_where, policy)
    if kind is FwType.APPLICATION and not command.sd_req:
        # nrfutil always writes sd_req (--sd-req is mandatory); only a hand-made packet lacks it, and the
        # bootloader reads an empty list as "no SoftDevice needed" and erases the device's SoftDevice.
        raise PackageError(
            f"{dat_where} has an empty sd_req: the bootloader would erase the device's SoftDevice after "
            "installing it",
            f"{_REBUILD} --sd-req <FWID of the target's SoftDevice>, or --sd-req 0x00 for an application "
            "that replaces the SoftDevice",
        )
    softdevice = _softdevice_of(kind, firmware, command.sd_size or 0, bin_where)
    if kind is FwType.SOFTDEVICE_BOOTLOADER:
        _check_metadata(
            files.metadata or {}, {"sd_size": command.sd_size, "bl_size": command.bl_size}, dat_where
        )
    _check_signature(init, dat_where, policy)
    version = softdevice.version if kind is FwType.SOFTDEVICE and softdevice else command.fw_version
    return Image(
        kind=kind,
        name=slot,
        firmware=firmware,
        init_packet=files.dat,
        init=init,
        version=version,
        softdevice=softdevice,
        bin_file=files.bin_name,
        dat_file=files.dat_name,
    )


def _check_hash(
    hash_type: int | None, digest: bytes | None, firmware: bytes, where: str, bin_name: str
) -> None:
    if hash_type is None or digest is None:
        raise PackageError(f"{where} has no firmware hash (the device would answer EXT 0x09)", _REBUILD)
    if hash_type != HashType.SHA256:
        raise PackageError(
            f"{where} has hash type {_enum_name(HashType, hash_type)}; the bootloader accepts only SHA256 "
            "(EXT 0x09)",
            _REBUILD,
        )
    if len(digest) != hashlib.sha256().digest_size:
        raise PackageError(f"{where} has a {len(digest)}-byte hash; SHA-256 needs 32", _REBUILD)
    actual = hashlib.sha256(firmware).digest()
    if actual != digest[::-1]:
        raise PackageError(
            f"{where}: the SHA-256 of {bin_name} ({actual.hex()}) does not match the init packet's "
            f"({digest[::-1].hex()})",
            f"the .bin is damaged or belongs to another .dat; {_REBUILD}",
        )


def _check_target(hw_version: int | None, sd_req: tuple[int, ...], where: str, policy: _Policy) -> None:
    if hw_version is None:
        raise PackageError(
            f"{where} has no hw_version (the device would answer EXT 0x04)", f"{_REBUILD} --hw-version N"
        )
    if policy.hw_version is not None and hw_version != policy.hw_version:
        raise PackageError(
            f"{where} is built for hw_version {hw_version}, but the target is hw_version {policy.hw_version} "
            "(the device would answer EXT 0x06)",
            f"{_REBUILD} --hw-version {policy.hw_version}",
        )
    if FWID_NEVER_MATCHES in sd_req:
        raise PackageError(
            f"{where} has sd_req 0x{FWID_NEVER_MATCHES:04X}, nrfutil's debug-mode placeholder, which "
            "an SDK 15.2 bootloader never accepts (EXT 0x07)",
            f"{_REBUILD} --sd-req <FWID of the target's SoftDevice> (0xAF for S132 6.1.0)",
        )


def _softdevice_of(kind: FwType, firmware: bytes, sd_size: int, where: str) -> SoftDeviceInfo | None:
    if kind not in (FwType.SOFTDEVICE, FwType.SOFTDEVICE_BOOTLOADER):
        return None
    with _prefixed(where):
        info = SoftDeviceInfo.parse(firmware[:sd_size])
    # Post-validation demands an info-struct end of at least the page-aligned image end (else 0x05).
    image_end = _align_page(_SD_MBR_SIZE + sd_size)
    if info.end_address < image_end:
        raise PackageError(
            f"{where}: the SoftDevice info struct's end address 0x{info.end_address:X} lies before the end "
            f"of its {sd_size}-byte image (0x{image_end:X}); the device would refuse it after the transfer",
            _SD_HINT,
        )
    return info


def _check_metadata(metadata: dict[str, object], init_sizes: dict[str, int | None], where: str) -> None:
    for key, expected in init_sizes.items():
        if key in metadata and (type(metadata[key]) is not int or metadata[key] != expected):
            raise PackageError(
                f"{where}: manifest info_read_only_metadata {key}={metadata[key]!r} disagrees with the init "
                f"packet's {key}={expected}",
                _REBUILD,
            )


def _check_signature(init: InitPacket, where: str, policy: _Policy) -> None:
    key = policy.public_key
    if key is None and not policy.require_signature:
        return
    if init.signature is None:
        if not policy.require_signature:
            return  # a key without the requirement verifies signed packages and lets unsigned ones pass
        reason = "a public key was given" if key is not None else "a signature is required"
        raise PackageError(
            f"{where} is unsigned but {reason} (the device would answer EXT 0x08)",
            f"{_REBUILD} --key-file KEY.pem",
        )
    if init.signature_type != SignatureType.ECDSA_P256_SHA256:
        raise PackageError(
            f"{where} is signed with {_enum_name(SignatureType, init.signature_type)}; SDK 15.2 verifies "
            "only ECDSA_P256_SHA256 (EXT 0x0B)",
            f"{_REBUILD} --key-file KEY.pem",
        )
    if len(init.signature) != SIGNATURE_SIZE:
        raise PackageError(
            f"{where} has a {len(init.signature)}-byte signature; ECDSA P-256 needs {SIGNATURE_SIZE}",
            _REBUILD,
        )
    if init.device_signed_bytes != init.signed_bytes:
        raise PackageError(
            f"{where}: its InitCommand is {len(init.signed_bytes)} bytes; an SDK 15.2 bootloader hashes the "
            "wrong bytes of an InitCommand of 128 bytes or more and always rejects its signature",
            "rebuild without --app-boot-validation VALIDATE_ECDSA_P256_SHA256",
        )
    if key is None:
        return
    # Only a given key needs the cryptography library; a package loaded without one never imports it.
    from mcu_updater.dfu.signing import verify_signature  # noqa: PLC0415

    if not verify_signature(init.signature, init.signed_bytes, key):
        raise PackageError(
            f"{where}: the signature does not verify with the given public key",
            "sign the package with the private key that matches the device's public key, or give that key",
        )


def _check_softdevice_then_app(package: Path, images: list[Image]) -> None:
    """An app sent after a new SoftDevice must accept that SoftDevice, or the device refuses it mid-update."""
    softdevice = next((image.softdevice for image in images if image.softdevice is not None), None)
    app = next((image for image in images if image.kind is FwType.APPLICATION), None)
    if softdevice is None or app is None or not app.sd_req or softdevice.fwid in app.sd_req:
        return
    listed = ", ".join(f"0x{fwid:02X}" for fwid in app.sd_req)
    raise PackageError(
        f"{package.name}: application {app.dat_file} requires SoftDevice FWID {listed}, not the "
        f"package's own {softdevice.label}; the device would refuse it (EXT 0x07) once that SoftDevice is in",
        f"{_REBUILD} --sd-id 0x{softdevice.fwid:02X}",
    )
