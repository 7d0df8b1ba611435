"""Public keys that verify init-packet signatures: a PEM file or nrfutil's ``--format code`` C array.

A key file the user names but that is not there (or cannot be read) raises InputMissingError (66);
anything wrong with its content (a private key, another curve, garbage, a point off the curve)
raises UsageError (64), because the user pointed the tool at the wrong file.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key

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
    try:
        with path.open("rb") as file:
            data = file.read(KEY_FILE_MAX + 1)
    except FileNotFoundError as exc:
        raise InputMissingError(f"public key file {path} does not exist", _GIVE_PUBLIC) from exc
    except OSError as exc:
        raise InputMissingError(
            f"public key file {path} cannot be read ({exc.strerror or exc})", "check the path and permissions"
        ) from exc
    if len(data) > KEY_FILE_MAX:
        raise UsageError(f"public key file {path} is larger than {KEY_FILE_MAX} bytes", _GIVE_PUBLIC)
    return parse_public_key(data, source=str(path))


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
