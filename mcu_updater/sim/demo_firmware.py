"""Demo firmware for the virtual nRF52, built on the spot and byte-for-byte reproducible.

Two packages, as a gateway would ship them in its firmware directory: a SoftDevice that upgrades the
fresh device's S132 6.1.0 (FWID 0xAF) to a stand-in for S132 6.1.1 (FWID 0xB7), and an application
that requires it. The contents are seeded pseudo-random bytes, not real firmware. The signing key is
derived from a published constant: it is a demo key that protects nothing.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec

from mcu_updater.dfu.initpacket import FwType
from mcu_updater.dfu.packager import ImageInput, write_package

DEMO_KEY_SCALAR: Final = int.from_bytes(b"mcu-updater demo key, not secret", "big")
HW_VERSION: Final = 52
FRESH_SD_FWID: Final = 0xAF
DEMO_SD_FWID: Final = 0xB7
DEMO_SD_VERSION: Final = 6_001_001
SD_INFO_OFFSET: Final = 0x2000
SD_MAGIC: Final = 0x51B1E5DB
SD_END: Final = 0x26000
_SD_INFO: Final = struct.Struct("<B3xIIH2xII")  # size, magic, end address, FWID, SD id, version


@dataclass(frozen=True)
class DemoFirmware:
    directory: Path
    packages: tuple[Path, ...]
    public_key: ec.EllipticCurvePublicKey


def demo_key() -> ec.EllipticCurvePrivateKey:
    return ec.derive_private_key(DEMO_KEY_SCALAR, ec.SECP256R1())


def _bytes(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)  # noqa: S311 - reproducible filler, not a secret


def softdevice_image(size: int = 0x9000) -> bytes:
    """A SoftDevice stand-in: loaded at 0x1000, its info struct at 0x3000 (offset 0x2000)."""
    image = bytearray(_bytes(size, seed=132))
    _SD_INFO.pack_into(image, SD_INFO_OFFSET, 0x2C, SD_MAGIC, SD_END, DEMO_SD_FWID, 132, DEMO_SD_VERSION)
    return bytes(image)


def build_demo_firmware(directory: Path, *, app_version: int = 1) -> DemoFirmware:
    """Write the two demo packages into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    key = demo_key()
    softdevice = ImageInput(
        FwType.SOFTDEVICE, softdevice_image(), "s132_demo_6.1.1", 0, sd_req=(FRESH_SD_FWID, DEMO_SD_FWID)
    )
    application = ImageInput(
        FwType.APPLICATION, _bytes(24 * 1024, seed=app_version), "blinky_demo", app_version, (DEMO_SD_FWID,)
    )
    paths = (directory / "s132_demo_6.1.1.zip", directory / f"blinky_demo_v{app_version}.zip")
    write_package(paths[0], [softdevice], hw_version=HW_VERSION, private_key=key)
    write_package(paths[1], [application], hw_version=HW_VERSION, private_key=key)
    return DemoFirmware(directory, paths, key.public_key())
