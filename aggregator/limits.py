"""How large a silo's answer to a plan can legitimately be, so the aggregator can refuse
anything larger before decoding it (issue 11, "cheap refusals").

A silo's largest answer is its TrainResult (every output of `work`: the metrics part and the
integer vectors for the secure sum) or, under secure aggregation, its MaskedInput (the same
vectors as uint64) or its bundle of encrypted shares (one per peer). Every element is
counted at 8 bytes whatever its dtype, doubled, plus fixed slack for headers and ids, so an
honest answer never comes near the limit while a hostile one cannot be much larger.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from healthfed_common.plan import Plan

BYTES_PER_ELEMENT = 8
SAFETY_FACTOR = 2
FIXED_SLACK_BYTES = 1024 * 1024
PER_PARTICIPANT_BYTES = 4 * 1024
"""One encrypted share (session id, two silo ids, a ~150-byte ciphertext) with its header
entries, or one entry of a consistency signature's list, is well under this."""
UNKNOWN_DIMENSION = 1 << 28
"""A dimension the type leaves open is counted at the codec's per-array ceiling."""


def limit_for_elements(elements: int, *, secure: bool, participants: int) -> int:
    """The Submit limit for answers carrying `elements` numbers in total, under secure
    aggregation (`secure`) among `participants` silos."""
    if elements < 0 or participants < 0:
        raise ValueError("element and participant counts cannot be negative")
    shares = PER_PARTICIPANT_BYTES * participants if secure else 0
    return SAFETY_FACTOR * BYTES_PER_ELEMENT * elements + shares + FIXED_SLACK_BYTES


def element_count(shapes: Iterable[tuple[int | None, ...]]) -> int:
    """Numbers in tensors of these shapes (a scalar is one number)."""
    return sum(math.prod(UNKNOWN_DIMENSION if d is None else d for d in shape) for shape in shapes)


def submit_limit_bytes(plan: Plan, computations: Any, participants: int) -> int:
    """The largest legitimate Submit for `plan`, from the output type of the computation the
    aggregator built for it (`FederatedComputations`); `participants`: silos per round."""
    from healthfed_common.tff_types import flatten_tensor_types

    leaves = flatten_tensor_types(computations.work.type_signature.result)
    elements = element_count(leaf.shape for leaf in leaves if not leaf.is_sequence)
    return limit_for_elements(elements, secure=plan.secure_aggregation.protocol != "none",
                              participants=participants)
