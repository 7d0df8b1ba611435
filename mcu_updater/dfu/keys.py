"""Signing keys: public keys that verify init packets (a PEM file or nrfutil's ``--format code`` C
array), and the P-256 private keys ``package`` makes, reads and shows as ``nrfutil keys`` does.

A key file the user names but that is not there (or cannot be read) raises InputMissingError (66);
anything wrong with its content (a public key where a private one is needed or the reverse, another
curve, garbage, a point off the curve) raises UsageError (64), because the user pointed the tool at
the wrong file.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Final, Literal

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)

from mcu_updater.errors import InputMissingError, UsageError

KEY_FILE_MAX: Final = 64 * 1024
_POINT_HALF: Final = 32

_GIVE_PUBLIC: Final = (
    "give the public key: nrfutil keys display --key pk --format pem (or --format code) KEY.pem"
)
_COMMENTS: Final = re.compile(r"/\*.*?\*/|//[^\n]*", re.DOTALL)
_ARRAY: Final = re.compile(r"(\w+)\s*\[\s*(\d*)\s*\]\s*=\s*\{([^}]*)\}")
_HEX_BYTE: Final = re.compile(r"0[xX]([0-9a-fA-F]{1,2})\b")


def load_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    """Read a P-256 public key from a PEM file or an nrfutil ``dfu_public_key.c``."""
    return parse_public_key(_read_key_file(path, "public key", _GIVE_PUBLIC), source=str(path))


def _read_key_file(path: Path, what: str, hint: str) -> bytes:
    try:
        with path.open("rb") as file:
            data = file.read(KEY_FILE_MAX + 1)
    except FileNotFoundError as exc:
        raise InputMissingError(f"{what} file {path} does not exist", hint) from exc
    except OSError as exc:
        raise InputMissingError(
            f"{what} file {path} cannot be read ({exc.strerror or exc})", "check the path and permissions"
        ) from exc
    if len(data) > KEY_FILE_MAX:
        raise UsageError(f"{what} file {path} is larger than {KEY_FILE_MAX} bytes", hint)
    return data


def parse_public_key(data: bytes, *, source: str = "public key") -> ec.EllipticCurvePublicKey:
    """Parse the content of a key file (PEM SubjectPublicKeyInfo or nrfutil C array)."""
    if b"PRIVATE KEY" in data:
        raise UsageError(f"{source} is a private key; the updater needs only the public key", _GIVE_PUBLIC)
    if b"-----BEGIN" in data:
        return _from_pem(data, source)
    return _from_c_array(data, source)


def _from_pem(data: bytes, source: str) -> ec.EllipticCurvePublicKey:
    try:
        key = load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{source} is not a readable PEM public key ({exc})", _GIVE_PUBLIC) from exc
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        kind = key.curve.name if isinstance(key, ec.EllipticCurvePublicKey) else type(key).__name__
        raise UsageError(
            f"{source} is a {kind} key; SDK 15.2 bootloaders verify only ECDSA P-256 (secp256r1)",
            "give the P-256 key made by nrfutil keys generate",
        )
    return key


def _from_c_array(data: bytes, source: str) -> ec.EllipticCurvePublicKey:
    try:
        text = _COMMENTS.sub(" ", data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise UsageError(f"{source} is neither a PEM key nor C source", _GIVE_PUBLIC) from exc
    match = _ARRAY.search(text)
    if match is None:
        raise UsageError(
            f"{source} is neither a PEM public key nor a C array like nrfutil's pk[64] = {{ 0x.., ... }}",
            _GIVE_PUBLIC,
        )
    name, body = match.group(1), match.group(3)
    if _HEX_BYTE.sub("", body).replace(",", "").strip():
        raise UsageError(
            f"{source}: the {name}[] initializer holds something other than hex bytes", _GIVE_PUBLIC
        )
    raw = bytes(int(byte, 16) for byte in _HEX_BYTE.findall(body))
    if name == "sk" or len(raw) == _POINT_HALF:
        raise UsageError(f"{source} holds a private key ({name}[{len(raw)}])", _GIVE_PUBLIC)
    if len(raw) != 2 * _POINT_HALF:
        raise UsageError(
            f"{source}: {name}[] holds {len(raw)} bytes; a P-256 public key is 64 (X then Y)", _GIVE_PUBLIC
        )
    # nrfutil stores X and Y each little-endian (the bootloader swaps them back at start-up).
    point = b"\x04" + raw[:_POINT_HALF][::-1] + raw[_POINT_HALF:][::-1]
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
    except ValueError as exc:
        raise UsageError(
            f"{source}: the 64 bytes of {name}[] are not a point on the P-256 curve",
            "regenerate the file with nrfutil keys display --key pk --format code KEY.pem",
        ) from exc


_GIVE_PRIVATE: Final = (
    "give the private key PEM made by mcu-updater package keys generate (or nrfutil keys generate)"
)
# The public point of the private key nrfutil ships for debug builds: anyone can sign with it.
NRFUTIL_DEBUG_KEY_POINT: Final = bytes.fromhex(
    "0468762b52efe814a217378e7b187fbc20ebafe8e20f0512eaa078da10a334c0"
    "8cc96749617cefc0e7784a1a32848d84f754d4d0dd9ab5601de8e5049030ffcb46"
)
KeyFormat = Literal["hex", "code", "pem"]


def load_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """Read an unencrypted P-256 private key PEM (SEC1 as nrfutil writes it, or PKCS#8)."""
    data = _read_key_file(path, "private key", _GIVE_PRIVATE)
    if b"PRIVATE KEY" not in data:
        what = "a public key" if b"PUBLIC KEY" in data or b"pk[" in data else "not a PEM private key"
        raise UsageError(f"{path} is {what}; signing needs the private key", _GIVE_PRIVATE)
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(
            f"{path} is not a readable unencrypted PEM private key ({reason})", _GIVE_PRIVATE
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        kind = key.curve.name if isinstance(key, ec.EllipticCurvePrivateKey) else type(key).__name__
        raise UsageError(
            f"{path} is a {kind} key; SDK 15.2 bootloaders verify only ECDSA P-256 (secp256r1)", _GIVE_PRIVATE
        )
    return key


def is_nrfutil_debug_key(key: ec.EllipticCurvePublicKey) -> bool:
    return key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint) == NRFUTIL_DEBUG_KEY_POINT


def private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    """SEC1 ("EC PRIVATE KEY") PEM, the form nrfutil keys generate writes."""
    return key.private_bytes(Encoding.PEM, PrivateFormat.TraditionalOpenSSL, NoEncryption())


def write_new_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """Generate a P-256 key into a file that must not exist yet, readable by its owner only."""
    key = ec.generate_private_key(ec.SECP256R1())
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError as exc:
        raise UsageError(
            f"{path} already exists; refusing to overwrite a key",
            "choose another file name, or remove it first",
        ) from exc
    except OSError as exc:
        raise UsageError(
            f"cannot create {path} ({exc.strerror or exc})", "check that its folder exists and is writable"
        ) from exc
    with os.fdopen(descriptor, "wb") as file:
        file.write(private_key_pem(key))
    return key


def _point_halves_le(key: ec.EllipticCurvePublicKey) -> bytes:
    # X and Y each little-endian: the layout the bootloader reads and nrfutil shows.
    point = key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)[1:]
    return point[:_POINT_HALF][::-1] + point[_POINT_HALF:][::-1]


def format_public_key(key: ec.EllipticCurvePublicKey, key_format: KeyFormat) -> str:
    """The public key as ``nrfutil keys display --key pk --format FORMAT`` prints it."""
    if key_format == "pem":
        return key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo).decode()
    raw = _point_halves_le(key)
    if key_format == "hex":
        return f"Public (verification) key pk:\n{raw.hex()}\n"
    x_bytes, y_bytes = (", ".join(f"0x{byte:02x}" for byte in half) for half in (raw[:32], raw[32:]))
    return (
        "\n/* This file was automatically generated by mcu-updater package keys display */\n\n"
        '#include "stdint.h"\n#include "compiler_abstraction.h"\n\n'
        "/** @brief Public key used to verify DFU images */\n"
        f"__ALIGN(4) const uint8_t pk[64] =\n{{\n    {x_bytes},\n    {y_bytes}\n}};\n"
    )


def format_private_key(key: ec.EllipticCurvePrivateKey, key_format: KeyFormat) -> str:
    """The private key as ``nrfutil keys display --key sk --format hex|pem`` prints it (no C code)."""
    if key_format == "code":
        raise UsageError("a private key is never written as C code", "use --format hex or pem with --key sk")
    if key_format == "pem":
        return private_key_pem(key).decode()
    scalar = key.private_numbers().private_value.to_bytes(_POINT_HALF, "big")
    return f"Private (signing) key sk:\n{scalar[::-1].hex()}\n"
