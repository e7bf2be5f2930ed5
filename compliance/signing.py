"""The node's Ed25519 audit signing key on disk, and public keys as officers receive them.

Why the care: whoever holds this key can sign checkpoints for the node's log, so it is
created with mode 0600 (atomically, with O_EXCL, so two processes starting together agree on
one key) and refused if it has become readable by group or others, as ssh does. The public
key is written beside it (`signing.pub`, PEM) so a compliance officer can pin it without
reading the secret.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from compliance.errors import KeyFileError

PUBLIC_KEY_SIZE = 32


def public_key_path(key_path: Path) -> Path:
    """Where the public half of `key_path` is published (same name, `.pub`)."""
    return key_path.with_suffix(".pub")


def load_or_create_signing_key(key_path: Path) -> Ed25519PrivateKey:
    """Load the PEM (PKCS#8) key at `key_path`, creating it with mode 0600 if missing."""
    key_path = Path(key_path)
    if not key_path.exists():
        key_path.parent.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_signing_key(key_path)  # another process created it first
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
            handle.flush()
            os.fsync(handle.fileno())
        public_key_path(key_path).write_bytes(public_key_pem(public_bytes(key)))
        return key
    return load_signing_key(key_path)


def load_signing_key(key_path: Path) -> Ed25519PrivateKey:
    """Load an existing signing key, refusing one readable by group or others."""
    try:
        mode = os.stat(key_path).st_mode
        data = Path(key_path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read signing key {key_path}: {exc.strerror}") from None
    if os.name == "posix" and mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyFileError(
            f"signing key {key_path} has mode {stat.S_IMODE(mode):04o}; "
            f"it must be readable by its owner only (chmod 600 {key_path})"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise KeyFileError(f"{key_path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{key_path} holds a {type(key).__name__}, not an Ed25519 key")
    return key


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    """The raw 32-byte public key of a signing key."""
    return key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )


def public_key_pem(raw: bytes) -> bytes:
    """PEM (SubjectPublicKeyInfo) text of a raw Ed25519 public key."""
    return Ed25519PublicKey.from_public_bytes(raw).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def load_public_key(path: Path) -> bytes:
    """Raw public key from a file holding a PEM public key, a PEM private key (its public
    half is used), 32 raw bytes, or 64 hex digits — whatever an officer was handed."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"cannot read public key {path}: {exc.strerror}") from None
    text = data.strip()
    if len(data) == PUBLIC_KEY_SIZE:
        return data
    if len(text) == 2 * PUBLIC_KEY_SIZE:
        try:
            return bytes.fromhex(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            pass
    if text.startswith(b"-----BEGIN PUBLIC KEY-----"):
        try:
            key = serialization.load_pem_public_key(text)
        except (ValueError, UnsupportedAlgorithm):
            raise KeyFileError(f"{path} is not a readable PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyFileError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    if b"PRIVATE KEY" in text:
        return public_bytes(load_signing_key(path))
    raise KeyFileError(
        f"{path} is neither a PEM Ed25519 key, 32 raw bytes, nor 64 hex digits"
    )


def fingerprint(raw_public_key: bytes) -> str:
    """SHA-256 of the raw public key, hex: how reports and errors name a key."""
    return hashlib.sha256(raw_public_key).hexdigest()
