"""Signed checkpoints: "at `timestamp`, the log of `origin` had `size` entries and this root".

Why a domain-separated canonical message: the same Ed25519 key must never be tricked into
signing something that reads as a checkpoint, and every verifier must rebuild the signed
bytes exactly; the message is the prefix `healthfed/audit-checkpoint/v1\\n` followed by the
canonical JSON of {origin, size, root_hash, timestamp}. Ed25519 signatures also bind the
public key, so a checkpoint cannot be re-attributed to another key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from compliance.clock import format_timestamp, parse_timestamp
from compliance.errors import MalformedCheckpoint, SignatureInvalid
from compliance.signing import PUBLIC_KEY_SIZE, fingerprint, public_bytes
from healthfed_common.canonical_json import canonical_json

MESSAGE_PREFIX = b"healthfed/audit-checkpoint/v1\n"
SIGNATURE_SIZE = 64
MAX_SIZE = 2**63 - 1
"""Largest log size a checkpoint may state: SQLite's INTEGER. A peer's checkpoint claiming more
is malformed (refused with a code), not an OverflowError in whoever stores it."""
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class SignedCheckpoint:
    """A signed tree head of one node's audit log."""

    origin: str
    size: int
    root_hash: str
    timestamp: str
    signature: bytes
    public_key: bytes

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.origin, str) or not self.origin:
            problems.append("origin must be a non-empty string")
        if not isinstance(self.size, int) or isinstance(self.size, bool) or not 0 <= self.size <= MAX_SIZE:
            problems.append(f"size must be an integer from 0 to 2^63 - 1, not {self.size!r}")
        if not isinstance(self.root_hash, str) or not _HEX64.match(self.root_hash):
            problems.append("root_hash must be 64 lowercase hex digits")
        try:
            parse_timestamp(self.timestamp)
        except (TypeError, ValueError):
            problems.append(f"timestamp {self.timestamp!r} is not RFC 3339 UTC (…Z)")
        if not isinstance(self.signature, bytes) or len(self.signature) != SIGNATURE_SIZE:
            problems.append(f"signature must be {SIGNATURE_SIZE} bytes")
        if not isinstance(self.public_key, bytes) or len(self.public_key) != PUBLIC_KEY_SIZE:
            problems.append(f"public_key must be {PUBLIC_KEY_SIZE} bytes")
        if problems:
            raise MalformedCheckpoint("checkpoint: " + "; ".join(problems))

    @property
    def root(self) -> bytes:
        """The root hash as bytes."""
        return bytes.fromhex(self.root_hash)

    @property
    def key_fingerprint(self) -> str:
        """SHA-256 of the public key, hex."""
        return fingerprint(self.public_key)

    def message(self) -> bytes:
        """The exact bytes that were signed."""
        return checkpoint_message(self.origin, self.size, self.root_hash, self.timestamp)

    def verify(self, trusted_public_key: bytes | None = None) -> None:
        """Check the signature, under `trusted_public_key` if given (it must also be the key
        the checkpoint names). Raises `SignatureInvalid` saying which check failed."""
        key = self.public_key if trusted_public_key is None else trusted_public_key
        if key != self.public_key:
            raise SignatureInvalid(
                f"checkpoint of {self.origin} at size {self.size} names key "
                f"{self.key_fingerprint[:16]}…, not the trusted key {fingerprint(key)[:16]}…"
            )
        try:
            Ed25519PublicKey.from_public_bytes(key).verify(self.signature, self.message())
        except (InvalidSignature, ValueError):
            raise SignatureInvalid(
                f"checkpoint of {self.origin} at size {self.size} ({self.timestamp}): "
                "signature does not verify"
            ) from None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (bytes as hex) for the wire and for reports."""
        return {
            "origin": self.origin,
            "size": self.size,
            "root_hash": self.root_hash,
            "timestamp": self.timestamp,
            "signature": self.signature.hex(),
            "public_key": self.public_key.hex(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SignedCheckpoint:
        """Inverse of `to_dict`; raises `MalformedCheckpoint` naming the bad field."""
        if not isinstance(data, Mapping):
            raise MalformedCheckpoint(f"checkpoint must be an object, not {type(data).__name__}")
        expected = {"origin", "size", "root_hash", "timestamp", "signature", "public_key"}
        missing, extra = expected - set(data), set(data) - expected
        if missing or extra:
            raise MalformedCheckpoint(
                f"checkpoint fields: missing {sorted(missing)}, unexpected {sorted(extra)}"
            )
        binary: dict[str, bytes] = {}
        for name in ("signature", "public_key"):
            try:
                binary[name] = bytes.fromhex(data[name])
            except (TypeError, ValueError):
                raise MalformedCheckpoint(f"checkpoint.{name} is not hex") from None
        return cls(
            origin=data["origin"],
            size=data["size"],
            root_hash=data["root_hash"],
            timestamp=data["timestamp"],
            signature=binary["signature"],
            public_key=binary["public_key"],
        )


def checkpoint_message(origin: str, size: int, root_hash: str, timestamp: str) -> bytes:
    """Domain-separated canonical bytes of a checkpoint's signed fields."""
    body = {"origin": origin, "size": size, "root_hash": root_hash, "timestamp": timestamp}
    return MESSAGE_PREFIX + canonical_json(body)


def sign_checkpoint(
    key: Ed25519PrivateKey, origin: str, size: int, root: bytes, moment: datetime
) -> SignedCheckpoint:
    """Sign the tree head (origin, size, root) at `moment`."""
    timestamp = format_timestamp(moment)
    root_hex = root.hex()
    signature = key.sign(checkpoint_message(origin, size, root_hex, timestamp))
    return SignedCheckpoint(origin, size, root_hex, timestamp, signature, public_bytes(key))
