"""A validated package in words: its manifest and every decoded init packet field. Pure.

What ``mcu-updater package display`` prints; the cryptography library is loaded only when a public
key is given to check the signatures against.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mcu_updater.dfu.initpacket import FwType, HashType, SignatureType
from mcu_updater.dfu.package import DfuPackage, Image

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec


@dataclass(frozen=True)
class Description:
    text: str
    signatures_ok: bool
    """False when a public key was given and some image is unsigned or does not verify with it."""


def _name(kind: type[HashType] | type[SignatureType], value: int | None) -> str:
    return kind(value).name if value is not None and value in kind._value2member_map_ else str(value)


def _version(value: int | None) -> str:
    return "absent" if value is None else f"0x{value:08X} ({value})"


def _signature(image: Image, public_key: ec.EllipticCurvePublicKey | None) -> tuple[str, bool]:
    init = image.init
    if init.signature is None:
        return "none (unsigned)", public_key is None
    kind = _name(SignatureType, init.signature_type)
    if public_key is None:
        return f"{kind}, {len(init.signature)} bytes (not checked: give --public-key)", True
    from mcu_updater.dfu.signing import verify_signature  # noqa: PLC0415

    if verify_signature(init.signature, init.signed_bytes, public_key):
        return f"{kind}, verifies with the given public key", True
    return f"{kind}, does NOT verify with the given public key", False


def describe_package(package: DfuPackage, public_key: ec.EllipticCurvePublicKey | None = None) -> Description:
    """The package as text, images in send order; checks signatures when ``public_key`` is given."""
    count = len(package.images)
    lines = [f"DFU package {package.path.name}: {count} image{'s' if count != 1 else ''}, in send order"]
    all_ok = True
    for image in package.images:
        command = image.init.command
        signature, ok = _signature(image, public_key)
        all_ok = all_ok and ok
        sd_req = ", ".join(f"0x{fwid:02X}" for fwid in command.sd_req) or "none"
        lines += [
            f"  {image.name}: {image.bin_file} + {image.dat_file}",
            f"    type            {command.fw_type.name if command.fw_type is not None else 'unknown'}",
            f"    fw_version      {_version(command.fw_version)}",
            f"    hw_version      {_version(command.hw_version)}",
            f"    sd_req          {sd_req}",
            f"    sd_size         {command.sd_size}",
            f"    bl_size         {command.bl_size}",
            f"    app_size        {command.app_size}",
            f"    hash            {_name(HashType, command.hash_type)} {image.sha256.hex()}",
            f"    is_debug        {command.is_debug}",
        ]
        if command.extra:
            lines.append(
                f"    other fields    {len(command.extra)} bytes (e.g. boot_validation; SDK 15.2 skips them)"
            )
        if image.softdevice is not None:
            info = image.softdevice
            lines.append(
                f"    softdevice      FWID 0x{info.fwid:02X}, version {info.version_text}, "
                f"id {info.sd_id}, ends at 0x{info.end_address:X}"
            )
        lines.append(f"    signature       {signature}")
        if command.fw_type is FwType.APPLICATION and image.replaces_softdevice:
            lines.append("    note            sd_req starts with 0x00: the bootloader erases the SoftDevice")
    if package.ignored_entries:
        lines.append(f"  ignored entries: {', '.join(package.ignored_entries)}")
    return Description("\n".join(lines) + "\n", all_ok)
