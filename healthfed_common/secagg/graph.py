"""The SecAgg+ neighbour graph (Bell et al. 2020), derived from public data only.

Every party must agree on who masks with whom without another message round, and the
aggregator must not be able to choose it (an aggregator that picks the graph can place a
victim among colluders). So the graph seed is derived from randomness the silos contribute:
each silo's signed key advertisement carries a fresh 32-byte nonce, and the seed is
HKDF(session_id, every roster member's (id, nonce)) -- `graph_seed`. The aggregator can only
omit advertisements (it needs at least t of them), never pick a nonce. The graph is a
Harary graph H(k, n) -- node i joined to the k/2 nearest
nodes on each side of a ring, plus the opposite node when k is odd -- laid over a
pseudorandom permutation of the participants; graph_parameters.py derives the degree k that is
safe for a stated security level. That gives exactly k neighbours per silo, is
k-connected (no small set of dropouts splits it), and places each silo's neighbours at
random; it is the construction Google's production SecAgg uses for the same purpose.

The permutation is a Fisher-Yates shuffle driven by AES-256-CTR keyed with
HKDF-SHA256(session_id), with rejection sampling so it is exactly uniform.
"""

from __future__ import annotations

import math
from typing import Iterator, Mapping

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from healthfed_common.secagg.keys import DOMAIN, lp


def effective_degree(n: int, k: int | None) -> int:
    """The degree actually used: n - 1 for the complete graph; k rounded up to even when both
    k and n are odd (no k-regular graph exists then)."""
    if k is None or k >= n - 1:
        return n - 1
    if k % 2 == 1 and n % 2 == 1:
        k += 1
    return min(k, n - 1)


def _random_words(seed: bytes) -> Iterator[int]:
    encryptor = Cipher(algorithms.AES(seed), modes.CTR(bytes(16))).encryptor()
    while True:
        block = encryptor.update(bytes(4096))
        for i in range(0, len(block), 8):
            yield int.from_bytes(block[i : i + 8], "big")


def graph_seed(session_id: bytes, nonces: Mapping[str, bytes]) -> bytes:
    """The SecAgg+ graph seed from the roster's signed nonces (in id order)."""
    material = lp(*(lp(silo.encode(), nonces[silo]) for silo in sorted(nonces)))
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=session_id, info=lp(DOMAIN, b"graph-seed")
    ).derive(material)


def _permutation(participants: tuple[str, ...], seed_material: bytes) -> list[str]:
    seed = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=seed_material, info=lp(DOMAIN, b"neighbour-graph")
    ).derive(lp(*(p.encode() for p in participants)))
    words = _random_words(seed)
    order = sorted(participants)
    for i in range(len(order) - 1, 0, -1):
        bound = i + 1
        limit = (1 << 64) - ((1 << 64) % bound)  # rejection sampling: exactly uniform
        while True:
            w = next(words)
            if w < limit:
                break
        j = w % bound
        order[i], order[j] = order[j], order[i]
    return order


def neighbour_sets(
    participants: tuple[str, ...], seed: bytes, k: int | None
) -> Mapping[str, frozenset[str]]:
    """Each participant's neighbours (never itself), from a `graph_seed`. Complete graph when
    k is None or k >= n - 1."""
    n = len(participants)
    degree = effective_degree(n, k)
    if degree == n - 1:
        everyone = frozenset(participants)
        return {p: everyone - {p} for p in participants}
    ring = _permutation(participants, seed)
    result: dict[str, frozenset[str]] = {}
    for i, silo in enumerate(ring):
        offsets: set[int] = set()
        for step in range(1, degree // 2 + 1):
            offsets.update(((i + step) % n, (i - step) % n))
        if degree % 2 == 1:
            offsets.add((i + n // 2) % n)
        result[silo] = frozenset(ring[j] for j in offsets)
    return result
