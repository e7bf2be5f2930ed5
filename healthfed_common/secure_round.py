"""How a round's secure-aggregation session follows from the plan and the computation, so
the aggregator and every silo derive identical parameters (a silo checks the session it is
offered against its own derivation and refuses any other)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np

from healthfed_common.learning_process import FederatedComputations
from healthfed_common.plan import Plan
from healthfed_common.secagg import SessionParams, default_neighbours, default_threshold
from healthfed_common.tff_types import flatten_tensor_types


def session_id(plan_hash: str, round_number: int, attempt: int) -> bytes:
    return hashlib.sha256(f"{plan_hash}|{round_number}|{attempt}".encode()).digest()


def session_params(
    plan: Plan, computations: FederatedComputations, participants: Sequence[str], round_number: int, attempt: int
) -> SessionParams:
    """Vector i is summed in Z_{2^B} with B = b_i + ceil(log2 n): the sum of n inputs below
    2^b_i never wraps, so the secure sum equals the plain one exactly."""
    n = len(participants)
    extra = max(1, math.ceil(math.log2(n)))
    leaves = secure_leaves(computations)
    spec = plan.secure_aggregation
    threshold = spec.threshold if spec.threshold is not None else default_threshold(n)
    neighbours = None
    if spec.protocol == "secagg_plus":
        neighbours = spec.neighbours or default_neighbours(n)
    return SessionParams(
        session_id=session_id(plan.plan_hash, round_number, attempt),
        participants=tuple(sorted(participants)),
        threshold=threshold,
        bitwidths=tuple(min(64, b + extra) for b in computations.secure_sum_bitwidths),
        vector_lengths=tuple(max(1, int(np.prod(leaf.shape))) for leaf in leaves),
        neighbours=neighbours,
    )


def secure_leaves(computations: FederatedComputations) -> list:
    parts = computations.work_parts
    leaves = flatten_tensor_types(computations.work.type_signature.result)
    return leaves[parts[0] : parts[0] + parts[1]]


def to_vectors(parts: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(p).astype(np.uint64).reshape(-1) for p in parts]


def from_vectors(computations: FederatedComputations, sums: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [
        np.asarray(vector).astype(leaf.dtype).reshape(leaf.shape)
        for vector, leaf in zip(sums, secure_leaves(computations))
    ]
