"""A hospital's long-term Ed25519 signing key: made on the hospital's own machine, never seen
by the coordinator, and pinned by its public half in every plan's cohort.

Why a second key beside the TLS key: the TLS certificate is issued by the federation's CA,
which the coordinator runs, so the coordinator could mint a certificate for any silo id. The
signing key's public half travels in the plan the hospital's data steward approves (and is
shown as a fingerprint by `silo-node plans show`), so a secure-aggregation message signed with
it speaks for that hospital whatever the coordinator does with the CA.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from healthfed_common.errors import HealthFedError

PUBLIC_KEY_BYTES = 32


class SigningKeyInvalid(HealthFedError, ValueError):
    """A signing key file or an encoded public key cannot be used."""

    code = "SIGNING_KEY_INVALID"


def generate_signing_key() -> Ed25519PrivateKey:
    """A fresh key from the OS CSPRNG (`cryptography` draws it from OpenSSL's RAND)."""
    return Ed25519PrivateKey.generate()


def write_signing_key(path: Path, key: Ed25519PrivateKey) -> None:
    """PKCS#8 PEM, created with mode 0600 (never world- or group-readable, even briefly)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise SigningKeyInvalid(f"{path}: signing key file not found") from None
    except (ValueError, TypeError):
        raise SigningKeyInvalid(f"{path}: not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyInvalid(f"{path}: expected an Ed25519 key")
    return key


def public_key_raw(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def encode_public_key(key: Ed25519PrivateKey | Ed25519PublicKey | bytes) -> str:
    """The form a plan's cohort carries: standard base64 of the 32 raw bytes."""
    raw = key if isinstance(key, bytes) else public_key_raw(key)
    return base64.b64encode(raw).decode("ascii")


def decode_public_key(encoded: str) -> bytes:
    try:
        raw = base64.b64decode(encoded.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise SigningKeyInvalid("signing key is not valid base64") from None
    if len(raw) != PUBLIC_KEY_BYTES:
        raise SigningKeyInvalid(f"signing key must be {PUBLIC_KEY_BYTES} bytes, got {len(raw)}")
    return raw


def fingerprint(public: bytes | str) -> str:
    """What a person compares out of band: SHA-256 of the raw public key, first 20 bytes in
    groups of four hex digits (`sha256:1a2b 3c4d ...`, 160 bits: no second-preimage search)."""
    raw = decode_public_key(public) if isinstance(public, str) else public
    digest = hashlib.sha256(raw).hexdigest()[:40]
    return "sha256:" + " ".join(digest[i : i + 4] for i in range(0, 40, 4))


def verify_signature(public: bytes, message: bytes, signature: bytes) -> bool:
    """True when `signature` is a valid Ed25519 signature of `message` under `public`."""
    if len(public) != PUBLIC_KEY_BYTES or len(signature) != 64:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True
