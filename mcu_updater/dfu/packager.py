"""Make DFU packages the way nrfutil 6.1.7 lays them out, byte for byte reproducible.

Same manifest.json shape and init-packet fields as ``nrfutil pkg generate`` (boot_validation included,
since SDK 15.2 ignores it but signs it); zip entries carry a fixed timestamp and signatures are
deterministic (RFC 6979, see ``signing``), so the same inputs always give the same package.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec

from mcu_updater.dfu.initpacket import FwType, HashType, InitCommand, encode_init_packet, image_hash_field
from mcu_updater.dfu.signing import ecdsa_signer

# nrfutil's default boot_validation entry (VALIDATE_GENERATED_CRC), unknown to SDK 15.2 but signed.
BOOT_VALIDATION_CRC: Final = bytes.fromhex("520408011200")
SOFTDEVICE_FW_VERSION: Final = 0xFFFF_FFFF
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


def init_packet(
    image: ImageInput, *, hw_version: int, private_key: ec.EllipticCurvePrivateKey | None
) -> bytes:
    """The .dat nrfutil would write for ``image`` (signed when a key is given)."""
    size = len(image.firmware)
    command = InitCommand(
        fw_type=image.kind,
        fw_version=SOFTDEVICE_FW_VERSION if image.kind is FwType.SOFTDEVICE else image.fw_version,
        hw_version=hw_version,
        sd_req=image.sd_req,
        sd_size=size if image.kind is FwType.SOFTDEVICE else 0,
        bl_size=size if image.kind is FwType.BOOTLOADER else 0,
        app_size=size if image.kind is FwType.APPLICATION else 0,
        hash_type=HashType.SHA256,
        hash=image_hash_field(image.firmware),
        extra=BOOT_VALIDATION_CRC,
    )
    signer = ecdsa_signer(private_key) if private_key is not None else None
    return encode_init_packet(command, signer)


def write_package(
    path: Path,
    images: Sequence[ImageInput],
    *,
    hw_version: int,
    private_key: ec.EllipticCurvePrivateKey | None,
) -> None:
    """Write an nrfutil-style .zip holding ``images`` (one per kind; SD+BL combined is not made here)."""
    manifest: dict[str, dict[str, str]] = {}
    files: list[tuple[str, bytes]] = []
    for image in images:
        dat = init_packet(image, hw_version=hw_version, private_key=private_key)
        manifest[_SLOT[image.kind]] = {"bin_file": f"{image.stem}.bin", "dat_file": f"{image.stem}.dat"}
        files += [(f"{image.stem}.dat", dat), (f"{image.stem}.bin", image.firmware)]
    files.insert(0, ("manifest.json", json.dumps({"manifest": manifest}, indent=4).encode()))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in files:
            archive.writestr(zipfile.ZipInfo(name, date_time=_ZIP_TIME), data, zipfile.ZIP_DEFLATED)
