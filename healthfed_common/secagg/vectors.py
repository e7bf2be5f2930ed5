"""Shape and range checks for the integer vectors of a session, shared by silo and
aggregator so both sides agree exactly on what a well-formed vector is."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from healthfed_common.secagg.errors import SecAggError
from healthfed_common.secagg.messages import U64Array
from healthfed_common.secagg.params import SessionParams


def check_vectors(
    params: SessionParams,
    vectors: Sequence[U64Array],
    error: type[SecAggError],
    owner: str,
) -> tuple[U64Array, ...]:
    """Return the vectors if each is a 1-D uint64 array of the session's length with every
    value < 2^b; otherwise raise `error` naming the owner and the vector (never values)."""
    if len(vectors) != len(params.bitwidths):
        raise error(f"{owner}: expected {len(params.bitwidths)} vectors, got {len(vectors)}")
    checked = []
    for i, (vector, length, bits) in enumerate(zip(vectors, params.vector_lengths, params.bitwidths)):
        if not isinstance(vector, np.ndarray) or vector.dtype != np.uint64 or vector.ndim != 1:
            raise error(f"{owner}: vector {i} must be a 1-D uint64 numpy array")
        if vector.shape[0] != length:
            raise error(f"{owner}: vector {i} has length {vector.shape[0]}, expected {length}")
        if bits < 64 and int(vector.max()) >> bits:
            raise error(f"{owner}: vector {i} has values outside Z_2^{bits}")
        checked.append(vector)
    return tuple(checked)
