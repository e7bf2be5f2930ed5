"""How a round's secure-aggregation session follows from the plan and the computation, so
the aggregator and every silo derive identical parameters (a silo checks the session it is
offered against its own derivation and refuses any other).

Everything that must be the same for every silo is bound into the session id: the plan
(hash), the round and attempt, the cohort and threshold, and the digest of the model state
the silo received. A silo sent a different model than its peers derives a different session
id, so its signed advertisement does not verify for them (and theirs not for it): the round
cannot unmask (Pasquini et al. 2022's per-silo model attack).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray

from healthfed_common.learning_process import FederatedComputations
from healthfed_common.plan import Plan
from healthfed_common.secagg import SessionParams
from healthfed_common.secagg.keys import lp
from healthfed_common.tff_types import flatten_tensor_types
from typing import Any


SESSION_DOMAIN = b"healthfed/secagg/session/v2"


def state_digest(arrays: Sequence[NDArray[Any]]) -> bytes:
    """SHA-256 over the dtype, shape and bytes of each array of the state a silo received."""
    digest = hashlib.sha256()
    for array in arrays:
        a = np.ascontiguousarray(array)
        digest.update(lp(a.dtype.str.encode(), repr(a.shape).encode(), a.tobytes()))
    return digest.digest()


def session_id(plan: Plan, round_number: int, attempt: int, model_digest: bytes) -> bytes:
    """sha256 over the plan hash, round, attempt, cohort, threshold and received model."""
    return hashlib.sha256(lp(
        SESSION_DOMAIN, plan.plan_hash.encode(), str(round_number).encode(), str(attempt).encode(),
        lp(*(s.encode() for s in plan.cohort_ids)), str(plan.secagg_threshold).encode(), model_digest,
    )).digest()


def session_params(
    plan: Plan, computations: FederatedComputations, round_number: int, attempt: int, model_digest: bytes
) -> SessionParams:
    """The session of one attempt of one round: participants are the plan's whole cohort and
    the threshold is the plan's (the aggregator cannot shrink either). Vector i is summed in
    Z_{2^B} with B = b_i + ceil(log2 n): the sum of n inputs below 2^b_i never wraps, so the
    secure sum equals the plain one exactly."""
    participants = plan.cohort_ids
    if len(participants) < 2:
        raise ValueError("a secure-aggregation plan needs a cohort of at least 2 silos")
    n = len(participants)
    extra = max(1, math.ceil(math.log2(n)))
    leaves = secure_leaves(computations)
    threshold = plan.secagg_threshold
    chosen = plan.secagg_graph
    sparse = chosen if chosen is not None and not chosen.complete else None
    return SessionParams(
        session_id=session_id(plan, round_number, attempt, model_digest),
        participants=participants,
        threshold=threshold,
        bitwidths=tuple(min(64, b + extra) for b in computations.secure_sum_bitwidths),
        vector_lengths=tuple(max(1, int(np.prod(leaf.shape))) for leaf in leaves),
        neighbours=None if sparse is None else sparse.degree,
        neighbourhood_threshold=None if sparse is None else sparse.neighbourhood_threshold,
    )


def secure_leaves(computations: FederatedComputations) -> list[Any]:
    parts = computations.work_parts
    leaves = flatten_tensor_types(computations.work.type_signature.result)
    return leaves[parts[0] : parts[0] + parts[1]]


def to_vectors(parts: Sequence[NDArray[Any]]) -> list[NDArray[Any]]:
    return [np.asarray(p).astype(np.uint64).reshape(-1) for p in parts]


def from_vectors(computations: FederatedComputations, sums: Sequence[NDArray[Any]]) -> list[NDArray[Any]]:
    return [
        np.asarray(vector).astype(leaf.dtype).reshape(leaf.shape)
        for vector, leaf in zip(sums, secure_leaves(computations))
    ]
