"""Public parameters of one secure-aggregation session (one attempt of one round).

Both sides build the same `SessionParams` from the plan and the round; nothing in it is
secret. Validation here is the silo's first line of defence: a threshold at or below half of
the participants is refused, because an aggregator that tells one half of the silos "u
survived" and the other half "u dropped" could then collect t shares of both of u's secrets
(each honest silo reveals only one kind per peer, so this needs 2t <= n).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Mapping

from healthfed_common.secagg import graph
from healthfed_common.secagg.errors import InvalidParameters

MAX_BITWIDTH: int = 64
MIN_SESSION_ID_BYTES: int = 16


def default_threshold(n: int) -> int:
    """The smallest safe threshold: a strict majority of the participants."""
    return n // 2 + 1


@dataclass(frozen=True)
class SessionParams:
    """Who takes part, how many must survive, and the shape of the vectors summed.

    `session_id` is sha256(plan_hash || round || attempt), computed by the caller; every
    message and every derived key is bound to it. `bitwidths[i]` is the b of vector i: it is
    summed in Z_{2^b}. `neighbours` = k selects SecAgg+ with a k-regular graph; None is
    classic SecAgg (everyone masks with everyone). `neighbourhood_threshold` is the Shamir
    threshold inside each neighbourhood that graph_parameters derived for k (plans always set
    it); without it a threshold scaled from t is used.
    """

    session_id: bytes
    participants: tuple[str, ...]
    threshold: int
    bitwidths: tuple[int, ...]
    vector_lengths: tuple[int, ...]
    neighbours: int | None = None
    neighbourhood_threshold: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.session_id, bytes) or len(self.session_id) < MIN_SESSION_ID_BYTES:
            raise InvalidParameters(f"session_id must be at least {MIN_SESSION_ID_BYTES} bytes")
        ids = self.participants
        if not isinstance(ids, tuple) or not all(isinstance(p, str) and p for p in ids):
            raise InvalidParameters("participants must be a tuple of non-empty strings")
        if len(set(ids)) != len(ids):
            raise InvalidParameters("participant ids must be unique")
        n = len(ids)
        if n < 2:
            raise InvalidParameters("secure aggregation needs at least 2 participants")
        if not isinstance(self.threshold, int) or not (n // 2 < self.threshold <= n):
            raise InvalidParameters(
                f"threshold {self.threshold} must be a strict majority of {n} participants "
                f"({n // 2 + 1}..{n})"
            )
        if len(self.bitwidths) == 0 or len(self.bitwidths) != len(self.vector_lengths):
            raise InvalidParameters("need one bitwidth per vector and at least one vector")
        if not all(isinstance(b, int) and 1 <= b <= MAX_BITWIDTH for b in self.bitwidths):
            raise InvalidParameters(f"bitwidths must be integers in 1..{MAX_BITWIDTH}")
        if not all(isinstance(d, int) and d >= 1 for d in self.vector_lengths):
            raise InvalidParameters("vector lengths must be positive integers")
        if self.neighbours is not None and (
            not isinstance(self.neighbours, int) or self.neighbours < 2
        ):
            raise InvalidParameters("neighbours must be None (complete graph) or an integer >= 2")
        if self.neighbourhood_threshold is not None:
            m = graph.effective_degree(n, self.neighbours) + 1
            if m == n or not (isinstance(self.neighbourhood_threshold, int) and m // 2 < self.neighbourhood_threshold <= m):
                raise InvalidParameters(
                    f"neighbourhood_threshold must be a strict majority of the {m} holders of a sparse graph")

    @property
    def n(self) -> int:
        """Number of participants."""
        return len(self.participants)

    @cached_property
    def index(self) -> Mapping[str, int]:
        """Each participant's Shamir x coordinate (1-based position in `participants`)."""
        return {p: i + 1 for i, p in enumerate(self.participants)}

    def graph_for(self, seed: bytes) -> Mapping[str, frozenset[str]]:
        """Neighbour sets (complete for classic SecAgg) for a `graph.graph_seed` derived from
        the roster's signed nonces -- never from anything the aggregator chose alone."""
        return graph.neighbour_sets(self.participants, seed, self.neighbours)

    @property
    def degree(self) -> int:
        """Neighbours per silo actually used."""
        return graph.effective_degree(self.n, self.neighbours)

    @property
    def share_threshold(self) -> int:
        """Shares needed to reconstruct one silo's secret. Classic: t. SecAgg+: each secret is
        shared among the silo and its `degree` neighbours (m holders); the threshold is t
        scaled to m, and never below a strict majority of m, which is what stops an
        equivocating aggregator from collecting both kinds of share inside a neighbourhood."""
        m = self.degree + 1
        if m == self.n:
            return self.threshold
        if self.neighbourhood_threshold is not None:
            return self.neighbourhood_threshold
        return max(m // 2 + 1, math.ceil(self.threshold * m / self.n))

    def modulus_mask(self, vector: int) -> int:
        """2^b - 1 for vector `vector`: the final reduction into Z_{2^b}."""
        return (1 << self.bitwidths[vector]) - 1
