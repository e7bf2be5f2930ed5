"""Mask expansion: a 32-byte key becomes a stream of uint64 words via AES-256-CTR.

Why AES-CTR from `cryptography`: it is a PRF-based PRG with a security proof under the AES
assumption, OpenSSL runs it with AES-NI at several GB/s, and the keystream can be written
into a reused buffer and added to the vector in place through a zero-copy numpy view, so
masking is bounded by memory bandwidth, not by Python. (Flower's SecAgg+ seeds numpy's
Mersenne Twister with 32 bits; that is neither cryptographic nor 128-bit secure.)

Each vector of a session gets a disjoint counter range: the initial counter block is
`vector_index * 2^64`, and no vector has 2^64 blocks, so no keystream block is ever reused
for two vectors under one key.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

KEY_BYTES: int = 32
_CHUNK_WORDS: int = 1 << 17  # 1 MiB of keystream per OpenSSL call: stays in L2, amortises calls
U64Array = NDArray[np.uint64]
_WORD = np.dtype("<u8")  # keystream words are little-endian on every platform


@lru_cache(maxsize=1)
def _zeros() -> bytes:
    """Plaintext of zeros to encrypt into keystream (made lazily: no work at import)."""
    return bytes(_CHUNK_WORDS * 8)


def _encryptor(key: bytes, vector_index: int) -> "object":
    if len(key) != KEY_BYTES:
        raise ValueError(f"PRG key must be {KEY_BYTES} bytes")
    if not 0 <= vector_index < (1 << 64):
        raise ValueError("vector index out of range")
    counter = (vector_index << 64).to_bytes(16, "big")
    return Cipher(algorithms.AES(key), modes.CTR(counter)).encryptor()


def apply_mask(acc: U64Array, key: bytes, vector_index: int, sign: int) -> None:
    """In place: acc <- acc + sign * PRG(key, vector_index) (mod 2^64), sign in {+1, -1}.

    `acc` must be a contiguous uint64 array; reduction to Z_{2^b} is left to the caller
    (2^b divides 2^64, so reducing once at the end is exact).
    """
    if acc.dtype != np.uint64 or not acc.flags.c_contiguous or acc.ndim != 1:
        raise TypeError("accumulator must be a contiguous 1-D uint64 array")
    if sign not in (1, -1):
        raise ValueError("sign must be +1 or -1")
    encryptor = _encryptor(key, vector_index)
    zeros = memoryview(_zeros())
    buffer = bytearray(_CHUNK_WORDS * 8 + 15)  # update_into needs block_size - 1 spare bytes
    words = np.frombuffer(buffer, dtype=_WORD, count=_CHUNK_WORDS)
    op = np.add if sign == 1 else np.subtract
    length = acc.shape[0]
    offset = 0
    while offset < length:
        n = min(_CHUNK_WORDS, length - offset)
        encryptor.update_into(zeros[: n * 8], buffer)  # type: ignore[attr-defined]
        segment = acc[offset : offset + n]
        op(segment, words[:n], out=segment)
        offset += n


def mask_stream(key: bytes, vector_index: int, length: int) -> U64Array:
    """The mask words themselves (for tests and for reasoning; the protocol never needs them
    materialised)."""
    out = np.zeros(length, dtype=np.uint64)
    apply_mask(out, key, vector_index, 1)
    return out
