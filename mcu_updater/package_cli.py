"""``mcu-updater package``: nrfutil 6.1.7's ``pkg generate|display`` and ``keys generate|display``.

Same options and the same package for the same inputs as ``nrfutil pkg generate`` (init packets
equal field for field; the signature differs only because nrfutil signs with a random nonce), for
Python 3.11+. Numbers are read as nrfutil reads them: ``0x..`` hex, a leading ``0`` octal, else
decimal. Exit codes: 64 bad options or key file, 65 a firmware file or package that is not valid
(or a signature that does not verify), 66 a file that is not there.

Where nrfutil is silent or surprising we refuse instead: ``--sd-id`` without both ``--softdevice``
and ``--application`` (nrfutil would quietly give it to the application as its sd_req), both
``--application-version`` and ``--application-version-string``, and any package our own loader
would refuse to flash. Only what SDK 15.2 serial DFU uses is offered: no ``--debug-mode``,
``--*-boot-validation``, ``--external-app`` or Zigbee options.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mcu_updater.errors import PackageError, UsageError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

_UINT32_MAX = 0xFFFF_FFFF
_FWID_MAX = 0xFFFF
_VERSION_PART_MAX = 99


def nrfutil_int(text: str) -> int:
    """An integer as nrfutil parses one: ``0x`` hex, leading ``0`` octal, otherwise decimal."""
    try:
        if text[:2].lower() == "0x":
            return int(text[2:], 16)
        if text.startswith("0"):
            return int(text, 8)
        return int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (write hex as 0x..)") from None


def _uint32(text: str) -> int:
    value = nrfutil_int(text)
    if not 0 <= value <= _UINT32_MAX:
        raise argparse.ArgumentTypeError(f"{text} is outside 0..0xFFFFFFFF")
    return value


def _fwids(text: str) -> tuple[int, ...]:
    values = tuple(nrfutil_int(item.strip()) for item in text.split(","))
    for value in values:
        if not 0 <= value <= _FWID_MAX:
            raise argparse.ArgumentTypeError(f"SoftDevice FWID {value:#x} is outside 0x00..0xFFFF")
    return values


def _version_string(text: str) -> int:
    """nrfutil's --application-version-string: "X.Y.Z" → X*10000 + Y*100 + Z."""
    parts = text.split(".")
    if len(parts) != 3 or not all(part.isdigit() for part in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not of the form X.Y.Z")
    major, minor, patch = (int(part) for part in parts)
    if minor > _VERSION_PART_MAX or patch > _VERSION_PART_MAX:
        raise argparse.ArgumentTypeError(f"{text!r}: Y and Z must be 0..99 to fit X*10000 + Y*100 + Z")
    value = major * 10000 + minor * 100 + patch
    if value > _UINT32_MAX:
        raise argparse.ArgumentTypeError(f"{text!r} is too large for a 32-bit version")
    return value


def add_package_parser(commands: argparse._SubParsersAction[Any]) -> None:
    package = commands.add_parser(
        "package",
        help="make, inspect and sign DFU packages (nrfutil pkg / keys, for Python 3.11+)",
        description=__doc__.splitlines()[0] if __doc__ else None,
    )
    actions = package.add_subparsers(dest="package_command", required=True)

    generate = actions.add_parser(
        "generate",
        help="write a DFU package (.zip) from HEX or .bin images, as nrfutil pkg generate",
        description="Write a DFU package. Images are Intel HEX, or raw images named *.bin. A SoftDevice "
        "and a bootloader together become one softdevice_bootloader image.",
    )
    generate.add_argument("zipfile", type=Path, metavar="OUT.zip", help="the package to write")
    generate.add_argument("--application", type=Path, metavar="FILE", help="application .hex or .bin")
    versions = generate.add_mutually_exclusive_group()
    versions.add_argument("--application-version", type=_uint32, metavar="N", help="application version")
    versions.add_argument(
        "--application-version-string",
        type=_version_string,
        dest="application_version",
        metavar="X.Y.Z",
        help="application version as X.Y.Z, stored as X*10000 + Y*100 + Z (as nrfutil)",
    )
    generate.add_argument("--softdevice", type=Path, metavar="FILE", help="SoftDevice .hex or .bin")
    generate.add_argument("--bootloader", type=Path, metavar="FILE", help="bootloader .hex or .bin")
    generate.add_argument("--bootloader-version", type=_uint32, metavar="N", help="bootloader version")
    generate.add_argument("--hw-version", type=_uint32, required=True, metavar="N", help="hardware version")
    generate.add_argument(
        "--sd-req",
        type=_fwids,
        required=True,
        metavar="0xAF[,0xB7...]",
        help="FWIDs of the SoftDevices the device may run now (0xAF = S132 6.1.0, 0xB7 = S132 6.1.1)",
    )
    generate.add_argument(
        "--sd-id",
        type=_fwids,
        default=(),
        metavar="0xB7",
        help="with --softdevice and --application: FWID of the new SoftDevice, the application's sd_req",
    )
    generate.add_argument("--key-file", type=Path, metavar="KEY.pem", help="private key to sign with")

    display = actions.add_parser(
        "display", help="show a package's manifest and decoded init packets, as nrfutil pkg display"
    )
    display.add_argument("package", type=Path, help="nrfutil .zip, or a .bin/.dat pair")
    display.add_argument(
        "--public-key", type=Path, metavar="KEY", help="check the signatures with this PEM or C-array key"
    )

    keys = actions.add_parser("keys", help="make or show signing keys, as nrfutil keys")
    key_actions = keys.add_subparsers(dest="keys_command", required=True)
    key_generate = key_actions.add_parser("generate", help="write a new P-256 private key (PEM, mode 0600)")
    key_generate.add_argument("key_file", type=Path, metavar="KEY.pem")
    key_display = key_actions.add_parser(
        "display", help="show a key as hex, PEM or the C array (dfu_public_key.c) the bootloader builds in"
    )
    key_display.add_argument("key_file", type=Path, metavar="KEY.pem")
    key_display.add_argument("--key", choices=("pk", "sk"), required=True, help="public (pk) or private (sk)")
    key_display.add_argument("--format", choices=("hex", "code", "pem"), required=True, dest="key_format")
    key_display.add_argument("--out-file", "--out_file", type=Path, dest="out_file", help="write it here")


def run_package(args: argparse.Namespace) -> int:
    if args.package_command == "generate":
        return _generate(args)
    if args.package_command == "display":
        return _display(args)
    if args.keys_command == "generate":
        return _keys_generate(args)
    return _keys_display(args)


def _warn(text: str) -> None:
    print(f"mcu-updater: warning: {text}", file=sys.stderr)


def _warn_if_debug_key(public_key: ec.EllipticCurvePublicKey) -> None:
    from mcu_updater.dfu.keys import is_nrfutil_debug_key  # noqa: PLC0415

    if is_nrfutil_debug_key(public_key):
        _warn("this is nrfutil's published debug key: anyone can sign packages with it; never ship it")


def _generate(args: argparse.Namespace) -> int:
    # The heavy parts (intelhex, cryptography, protobuf) load only when a package is made.
    from mcu_updater.dfu.hexfile import read_firmware  # noqa: PLC0415
    from mcu_updater.dfu.keys import load_private_key  # noqa: PLC0415
    from mcu_updater.dfu.packager import PackageSpec, SourceImage, generate_package  # noqa: PLC0415

    def source(path: Path | None) -> SourceImage | None:
        return SourceImage(path.stem, read_firmware(path)) if path is not None else None

    if args.zipfile.suffix.lower() != ".zip":
        raise UsageError(f"{args.zipfile} does not end in .zip", "name the package OUT.zip")
    key = load_private_key(args.key_file) if args.key_file is not None else None
    spec = PackageSpec(
        hw_version=args.hw_version,
        sd_req=args.sd_req,
        application=source(args.application),
        application_version=args.application_version,
        softdevice=source(args.softdevice),
        bootloader=source(args.bootloader),
        bootloader_version=args.bootloader_version,
        sd_id=args.sd_id,
    )
    package = generate_package(args.zipfile, spec, key)
    if key is None:
        _warn(
            "no --key-file: the package is unsigned; a bootloader that checks signatures (the SDK 15.2 "
            "default) refuses it with EXT 0x08"
        )
    else:
        _warn_if_debug_key(key.public_key())
    signed = "signed" if key is not None else "unsigned"
    print(f"wrote {args.zipfile} ({signed}): {', '.join(image.label for image in package.images)}")
    return 0


def _display(args: argparse.Namespace) -> int:
    from mcu_updater.dfu.describe import describe_package  # noqa: PLC0415
    from mcu_updater.dfu.package import load_package  # noqa: PLC0415

    public_key = None
    if args.public_key is not None:
        from mcu_updater.dfu.keys import load_public_key  # noqa: PLC0415

        public_key = load_public_key(args.public_key)
    description = describe_package(load_package(args.package), public_key)
    sys.stdout.write(description.text)
    if not description.signatures_ok:
        raise PackageError(
            f"{args.package.name} is not signed by the key in {args.public_key}",
            "sign it with the matching private key (package generate --key-file)",
        )
    return 0


def _keys_generate(args: argparse.Namespace) -> int:
    from mcu_updater.dfu.keys import write_new_private_key  # noqa: PLC0415

    write_new_private_key(args.key_file)
    print(f"wrote a new P-256 private key to {args.key_file} (mode 0600); keep it secret")
    return 0


def _keys_display(args: argparse.Namespace) -> int:
    from mcu_updater.dfu import keys  # noqa: PLC0415

    path: Path = args.key_file
    private: ec.EllipticCurvePrivateKey | None = None
    try:
        private = keys.load_private_key(path)
        public = private.public_key()
    except UsageError:
        # nrfutil wants the private key, but the public one is all --key pk needs.
        if args.key != "pk":
            raise
        public = keys.load_public_key(path)
    _warn_if_debug_key(public)
    if args.key == "sk":
        assert private is not None
        text = keys.format_private_key(private, args.key_format)
        _warn("this is the private key: do not share it")
    else:
        text = keys.format_public_key(public, args.key_format)
    if args.out_file is None:
        sys.stdout.write(text)
        return 0
    try:
        args.out_file.write_text(text)
    except OSError as exc:
        raise UsageError(f"cannot write {args.out_file} ({exc.strerror or exc})", "check the path") from exc
    return 0
