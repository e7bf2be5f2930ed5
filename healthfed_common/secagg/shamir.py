"""t-of-n Shamir secret sharing of 32-byte secrets over GF(p), p = 2^256 + 297.

Why this field: both secrets we share are exactly 32 uniformly random bytes (the self-mask
seed b_u, used directly as an AES-256 key, and the raw X25519 masking key s_u). The smallest
prime above 2^256 holds every such value as one field element, so a secret is one share, with
no chunking (2^127 - 1 would need three) and no bias or loss (a prime just *below* 2^256,
e.g. 2^255 - 19, cannot represent every 32-byte string). 2^256 + 297 is prime (checked by a
Miller-Rabin test in tests/secagg/test_shamir.py). Shares are encoded in 33 bytes.

Randomness for polynomial coefficients comes from `secrets` (the OS CSPRNG).
"""

from __future__ import annotations

import secrets
from functools import lru_cache
from typing import Mapping, Sequence

from healthfed_common.secagg.errors import ProtocolViolation

PRIME: int = (1 << 256) + 297
SECRET_BYTES: int = 32
SHARE_BYTES: int = 33


def split(secret: bytes, xs: Sequence[int], threshold: int) -> dict[int, bytes]:
    """Split a 32-byte secret into shares at the given nonzero x coordinates; any
    `threshold` of them reconstruct it, fewer reveal nothing (information-theoretically)."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"secret must be {SECRET_BYTES} bytes, got {len(secret)}")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold {threshold} outside 1..{len(xs)}")
    if len(set(xs)) != len(xs) or any(not 0 < x < PRIME for x in xs):
        raise ValueError("share x coordinates must be distinct and nonzero")
    coefficients = [int.from_bytes(secret, "big")]
    coefficients += [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    shares: dict[int, bytes] = {}
    for x in xs:
        y = 0
        for c in reversed(coefficients):  # Horner
            y = (y * x + c) % PRIME
        shares[x] = y.to_bytes(SHARE_BYTES, "big")
    return shares


@lru_cache(maxsize=256)
def _lagrange_at_zero(xs: tuple[int, ...]) -> tuple[int, ...]:
    """Lagrange basis values at 0 for a set of x coordinates. Cached because in a round every
    secret is usually reconstructed from the same set of responding holders."""
    weights = []
    for i, xi in enumerate(xs):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * xj % PRIME
                den = den * (xj - xi) % PRIME
        weights.append(num * pow(den, -1, PRIME) % PRIME)
    return tuple(weights)


def combine(shares: Mapping[int, bytes], threshold: int) -> bytes:
    """Reconstruct a secret from at least `threshold` shares (the `threshold` lowest x are
    used, so the result is deterministic). Raises ProtocolViolation on malformed shares or a
    result that is not a 32-byte value (a sign that a holder sent a corrupted share)."""
    if len(shares) < threshold:
        raise ValueError(f"need {threshold} shares, got {len(shares)}")
    xs = tuple(sorted(shares)[:threshold])
    total = 0
    for x, w in zip(xs, _lagrange_at_zero(xs)):
        share = shares[x]
        if len(share) != SHARE_BYTES:
            raise ProtocolViolation(f"share for x={x} has {len(share)} bytes, expected {SHARE_BYTES}")
        y = int.from_bytes(share, "big")
        if y >= PRIME:
            raise ProtocolViolation(f"share for x={x} is not a field element")
        total = (total + y * w) % PRIME
    if total >> (8 * SECRET_BYTES):
        raise ProtocolViolation("reconstructed value is not a 32-byte secret (corrupted shares)")
    return total.to_bytes(SECRET_BYTES, "big")
