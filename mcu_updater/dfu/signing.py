"""ECDSA P-256 in the bootloader's format: r and s as 32-byte little-endian halves. Pure.

Kept apart from the init-packet codec so that loading a package without a key never loads the
cryptography library (about 10 MiB of resident memory and 20 ms of start-up).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from mcu_updater.dfu.initpacket import SIGNATURE_SIZE, Signer


def ecdsa_signer(private_key: ec.EllipticCurvePrivateKey) -> Signer:
    """Deterministic (RFC 6979) signatures: the same package bytes from the same inputs."""

    def sign(data: bytes) -> bytes:
        algorithm = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
        r, s = decode_dss_signature(private_key.sign(data, algorithm))
        return r.to_bytes(32, "big")[::-1] + s.to_bytes(32, "big")[::-1]

    return sign


def verify_signature(signature: bytes, signed_bytes: bytes, public_key: ec.EllipticCurvePublicKey) -> bool:
    """Check a bootloader-format (little-endian halves) ECDSA P-256 signature."""
    if len(signature) != SIGNATURE_SIZE:
        return False
    r = int.from_bytes(signature[:32][::-1], "big")
    s = int.from_bytes(signature[32:][::-1], "big")
    try:
        public_key.verify(encode_dss_signature(r, s), signed_bytes, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True
