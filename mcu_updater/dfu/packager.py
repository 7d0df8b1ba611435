"""Make DFU packages the way nrfutil 6.1.7 lays them out, byte for byte reproducible.

Same manifest.json and init-packet fields as ``nrfutil pkg generate`` (boot_validation included,
since SDK 15.2 ignores it but signs it); zip entries carry a fixed timestamp and signatures are
deterministic (RFC 6979, see ``signing``), so the same inputs always give the same package.
``plan_images`` turns ``pkg generate``'s options into images with nrfutil's rules (which image gets
which sd_req, the SoftDevice+bootloader combination); ``generate_package`` writes and re-reads the
result, so no package leaves here that ``load_package`` would refuse.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec

from mcu_updater.dfu.initpacket import FwType, HashType, InitCommand, encode_init_packet, image_hash_field
from mcu_updater.dfu.package import MANIFEST_NAME, DfuPackage, load_package
from mcu_updater.dfu.signing import ecdsa_signer
from mcu_updater.errors import PackageError, UsageError

# nrfutil's default boot_validation entry (VALIDATE_GENERATED_CRC), unknown to SDK 15.2 but signed.
BOOT_VALIDATION_CRC: Final = bytes.fromhex("520408011200")
SOFTDEVICE_FW_VERSION: Final = 0xFFFF_FFFF
SD_BL_STEM: Final = "sd_bl"
_ZIP_TIME: Final = (2020, 1, 1, 0, 0, 0)
_SLOT: Final = {
    FwType.APPLICATION: "application",
    FwType.SOFTDEVICE: "softdevice",
    FwType.BOOTLOADER: "bootloader",
    FwType.SOFTDEVICE_BOOTLOADER: "softdevice_bootloader",
}


@dataclass(frozen=True)
class ImageInput:
    """One image to package: its kind, .bin contents, file stem and version."""

    kind: FwType
    firmware: bytes
    stem: str
    fw_version: int
    sd_req: tuple[int, ...]
    sd_size: int = 0
    """The SoftDevice's share of a SOFTDEVICE_BOOTLOADER image (the bootloader follows it)."""
    extra: bytes = BOOT_VALIDATION_CRC
    """Serialized fields after is_debug: nrfutil's boot_validation entries (two in an SD+BL image)."""


def init_packet(
    image: ImageInput, *, hw_version: int, private_key: ec.EllipticCurvePrivateKey | None
) -> bytes:
    """The .dat nrfutil would write for ``image`` (signed when a key is given)."""
    size = len(image.firmware)
    sizes = {
        FwType.APPLICATION: (0, 0, size),
        FwType.SOFTDEVICE: (size, 0, 0),
        FwType.BOOTLOADER: (0, size, 0),
        FwType.SOFTDEVICE_BOOTLOADER: (image.sd_size, size - image.sd_size, 0),
    }
    sd_size, bl_size, app_size = sizes[image.kind]
    command = InitCommand(
        fw_type=image.kind,
        fw_version=SOFTDEVICE_FW_VERSION if image.kind is FwType.SOFTDEVICE else image.fw_version,
        hw_version=hw_version,
        sd_req=image.sd_req,
        sd_size=sd_size,
        bl_size=bl_size,
        app_size=app_size,
        hash_type=HashType.SHA256,
        hash=image_hash_field(image.firmware),
        extra=image.extra,
    )
    signer = ecdsa_signer(private_key) if private_key is not None else None
    return encode_init_packet(command, signer)


def manifest_json(images: Iterable[ImageInput]) -> bytes:
    """manifest.json exactly as nrfutil 6.1.7 writes it (sorted keys, 4-space indent)."""
    manifest: dict[str, dict[str, object]] = {}
    for image in images:
        entry: dict[str, object] = {"bin_file": f"{image.stem}.bin", "dat_file": f"{image.stem}.dat"}
        if image.kind is FwType.SOFTDEVICE_BOOTLOADER:
            sizes = {"bl_size": len(image.firmware) - image.sd_size, "sd_size": image.sd_size}
            entry["info_read_only_metadata"] = sizes
        manifest[_SLOT[image.kind]] = entry
    return json.dumps({"manifest": manifest}, sort_keys=True, indent=4, separators=(",", ": ")).encode()


def write_package(
    path: Path,
    images: Sequence[ImageInput],
    *,
    hw_version: int,
    private_key: ec.EllipticCurvePrivateKey | None,
) -> None:
    """Write an nrfutil-style .zip holding ``images`` (one per kind)."""
    files: list[tuple[str, bytes]] = [(MANIFEST_NAME, manifest_json(images))]
    for image in images:
        dat = init_packet(image, hw_version=hw_version, private_key=private_key)
        files += [(f"{image.stem}.dat", dat), (f"{image.stem}.bin", image.firmware)]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files:
            archive.writestr(zipfile.ZipInfo(name, date_time=_ZIP_TIME), data, zipfile.ZIP_DEFLATED)


@dataclass(frozen=True)
class SourceImage:
    """A firmware file given to ``package generate``: its name without suffix and its .bin bytes."""

    stem: str
    firmware: bytes


@dataclass(frozen=True)
class PackageSpec:
    """The options of ``nrfutil pkg generate`` that SDK 15.2 packages use."""

    hw_version: int
    sd_req: tuple[int, ...]
    application: SourceImage | None = None
    application_version: int | None = None
    softdevice: SourceImage | None = None
    bootloader: SourceImage | None = None
    bootloader_version: int | None = None
    sd_id: tuple[int, ...] = ()


def _nrfutil_sd_req(values: Sequence[int]) -> tuple[int, ...]:
    # nrfutil de-duplicates sd_req through a Python set; the same set gives the same order here
    # (for these small integers: by value modulo the table size, so 0x00 always comes first).
    return tuple(set(values))


def plan_images(spec: PackageSpec) -> list[ImageInput]:
    """The images nrfutil 6.1.7 would pack for ``spec``, in send order; UsageError for what it refuses."""
    app, sd, bl = spec.application, spec.softdevice, spec.bootloader
    if app is not None and bl is not None and sd is None:
        raise UsageError(
            "a package cannot hold a bootloader and an application without a SoftDevice (nor can nrfutil's)",
            "make two packages: one with --bootloader, one with --application",
        )
    for image, version, name in (
        (app, spec.application_version, "application"),
        (bl, spec.bootloader_version, "bootloader"),
    ):
        if image is None and version is not None:
            raise UsageError(
                f"--{name}-version given without --{name}", f"add --{name} FILE or drop the version"
            )
        if image is not None and version is None:
            raise UsageError(
                f"--{name} needs --{name}-version N", "give the version the device compares against"
            )
    if app is None and sd is None and bl is None:
        raise UsageError("no firmware given", "give --application, --softdevice and/or --bootloader")
    if app is not None and sd is not None and not spec.sd_id:
        raise UsageError(
            "--softdevice with --application needs --sd-id: the FWID of the new SoftDevice the application "
            "will run on",
            "add e.g. --sd-id 0xB7 (S132 6.1.1)",
        )
    if spec.sd_id and (app is None or sd is None):
        raise UsageError(
            "--sd-id applies only to a package with both --softdevice and --application",
            "drop --sd-id, or use --sd-req for the SoftDevice the device has now",
        )
    if not spec.sd_req:
        raise UsageError("--sd-req needs at least one SoftDevice FWID", "e.g. --sd-req 0xAF (S132 6.1.0)")
    # As nrfutil: images sent while the old SoftDevice runs accept it and, so that a cut update can be
    # repeated, the new one too; the application is checked after the new SoftDevice is in.
    sd_req = list(spec.sd_req)
    sd_req += set(spec.sd_id) - set(sd_req)
    before = _nrfutil_sd_req(sd_req)
    images: list[ImageInput] = []
    if sd is not None and bl is not None:
        assert spec.bootloader_version is not None
        images.append(
            ImageInput(
                FwType.SOFTDEVICE_BOOTLOADER,
                sd.firmware + bl.firmware,
                SD_BL_STEM,
                spec.bootloader_version,
                before,
                sd_size=len(sd.firmware),
                extra=BOOT_VALIDATION_CRC * 2,
            )
        )
    elif sd is not None:
        images.append(ImageInput(FwType.SOFTDEVICE, sd.firmware, sd.stem, SOFTDEVICE_FW_VERSION, before))
    elif bl is not None:
        assert spec.bootloader_version is not None
        images.append(ImageInput(FwType.BOOTLOADER, bl.firmware, bl.stem, spec.bootloader_version, before))
    if app is not None:
        assert spec.application_version is not None
        app_sd_req = _nrfutil_sd_req(spec.sd_id or spec.sd_req)
        images.append(
            ImageInput(FwType.APPLICATION, app.firmware, app.stem, spec.application_version, app_sd_req)
        )
    stems = [image.stem for image in images]
    clashing = sorted({stem for stem in stems if stems.count(stem) > 1})
    if clashing:
        raise UsageError(
            f"two images would both be stored as {clashing[0]}.bin in the package",
            "rename one of the firmware files",
        )
    return images


def generate_package(
    path: Path, spec: PackageSpec, private_key: ec.EllipticCurvePrivateKey | None
) -> DfuPackage:
    """Write the package for ``spec`` to ``path`` (atomically) once ``load_package`` accepts it."""
    images = plan_images(spec)
    try:
        # Staged under its own name, so that any complaint of load_package names the real file.
        staging = Path(tempfile.mkdtemp(prefix=".mcu-updater-package.", dir=path.parent))
    except OSError as exc:
        raise UsageError(
            f"cannot write {path} ({exc.strerror or exc})", "check that its folder exists and is writable"
        ) from exc
    staged = staging / path.name
    try:
        write_package(staged, images, hw_version=spec.hw_version, private_key=private_key)
        public_key = private_key.public_key() if private_key is not None else None
        try:
            loaded = load_package(staged, public_key=public_key)
        except PackageError as exc:
            raise PackageError(
                f"refusing to write a package the device would refuse: {exc.message}", exc.hint
            ) from exc
        staged.replace(path)
    except IsADirectoryError as exc:
        raise UsageError(f"{path} is a directory", "give the name of the .zip to write") from exc
    finally:
        staged.unlink(missing_ok=True)
        staging.rmdir()
    return DfuPackage(path=path, images=loaded.images)
