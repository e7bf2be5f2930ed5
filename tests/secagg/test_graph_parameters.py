"""The SecAgg+ degree is chosen so that a coordinator cannot split the honest survivors.

The attack first: with a graph sparser than colluders + dropouts, a coordinator that "drops"
the right silos (it only has to ignore their masked inputs) splits the survivors into pieces
and unmasks a piece on its own -- a sum over fewer than t hospitals. Then the defence: plans
are refused such a degree, and the degree HealthFed derives survives every removal of
c + (n - t) silos (checked exhaustively), while random crashes stop a round no more often than
the stated bound (checked by simulation).
"""

from __future__ import annotations

import itertools
import math
import os
import random
from typing import Mapping

import numpy as np
import pytest

from healthfed_common.plan import PlanInvalid, parse_plan
from healthfed_common.secagg import SecAggClient, SecAggServer, SessionParams
from healthfed_common.secagg import keys, prg
from healthfed_common.secagg.graph import neighbour_sets
from healthfed_common.secagg.graph_parameters import (
    GraphRequirement,
    GraphTooSparse,
    _hypergeometric_counts,
    check_degree,
    choose_graph,
)
from healthfed_common.secagg.messages import MaskedInput
from tests.secagg.helpers import random_vector
from tests.silo_data.plans import make_plan

BITS = 16


def _components(graph: Mapping[str, frozenset[str]], alive: set[str]) -> list[set[str]]:
    left, pieces = set(alive), []
    while left:
        frontier = [left.pop()]
        piece = set(frontier)
        while frontier:
            for v in graph[frontier.pop()] & left:
                left.discard(v)
                piece.add(v)
                frontier.append(v)
        pieces.append(piece)
    return pieces


class RecordingServer(SecAggServer):
    """An aggregator that follows the protocol but keeps every masked input it receives."""

    def __init__(self, params: SessionParams) -> None:
        super().__init__(params)
        self.recorded: dict[str, tuple[np.ndarray, ...]] = {}

    def receive_masked_input(self, masked: MaskedInput) -> None:
        self.recorded[masked.sender] = tuple(v.copy() for v in masked.vectors)
        super().receive_masked_input(masked)


def _piece_sum(server: RecordingServer, piece: set[str], dropped: set[str]) -> np.ndarray:
    """What the coordinator computes for one piece of a split graph: the piece's masked inputs
    minus their self masks and their pair masks with the dropped silos (the secrets the
    protocol hands it for the round it runs anyway)."""
    p = server.params
    roster = server.roster()
    acc = np.zeros(p.vector_lengths[0], dtype=np.uint64)
    for u in piece:
        np.add(acc, server.recorded[u][0], out=acc)
        prg.apply_mask(acc, server._reconstruct(u, "self_mask_shares"), 0, -1)
        for v in dropped & server.graph[u]:
            private = server._reconstruct(v, "key_shares")
            key = keys.mask_key(private, roster.s_public[u], p.session_id, u, v)
            prg.apply_mask(acc, key, 0, -(1 if u < v else -1))
    return np.bitwise_and(acc, np.uint64(p.modulus_mask(0)))


def test_too_sparse_a_graph_lets_the_coordinator_unmask_fewer_than_t_hospitals() -> None:
    ids = ("h0", "h1", "h2", "h3", "h4")
    params = SessionParams(os.urandom(32), ids, 3, (BITS,), (8,), neighbours=2)  # a ring, t = 3
    rng = np.random.default_rng(7)
    inputs = {s: [random_vector(rng, BITS - 3, 8)] for s in ids}
    server = RecordingServer(params)
    clients = {s: SecAggClient(s, params) for s in ids}
    for s in ids:
        server.receive_advertisement(clients[s].advertise_keys())
    roster = server.roster()
    for s in ids:
        server.receive_shares(s, clients[s].share_keys(roster))
    graph = server.graph
    # The coordinator now knows the graph; it picks two silos to "drop" that split the rest.
    dropped, pieces = next(
        (set(pair), pieces) for pair in itertools.combinations(ids, 2)
        if len(pieces := _components(graph, set(ids) - set(pair))) > 1
    )
    live = [s for s in ids if s not in dropped]
    inboxes = {s: server.inbox_for(s) for s in live}
    for s in live:
        server.receive_masked_input(clients[s].masked_input(inboxes[s], inputs[s]))
    split = server.unmask_request()
    for s in live:
        server.receive_consistency_signature(clients[s].sign_consistency(split))
    request = server.signed_unmask_request()
    for s in live:
        server.receive_unmask_response(clients[s].unmask(request))
    # The shares are out now, whatever happens to the round (its singleton piece keeps its own
    # seed, so the official sum would abort -- too late for the other piece).
    piece = max(pieces, key=len)
    assert len(piece) < params.threshold
    expected = sum((inputs[u][0] for u in piece), np.zeros(8, dtype=np.uint64))
    np.testing.assert_array_equal(_piece_sum(server, piece, dropped), expected)  # fewer than t revealed

    # The defence: a plan cannot ask for that graph, and the one it derives is complete.
    document = make_plan(cohort=[]).model_dump(mode="json")
    from tests.silo_data.plans import COHORT

    cohort = [*COHORT, *(_extra_member(i) for i in range(2))]
    document.update(cohort=cohort, min_silos_per_round=3,
                    secure_aggregation={"protocol": "secagg_plus", "threshold": 3, "neighbours": 2})
    with pytest.raises(PlanInvalid, match="degree 2 is unsafe"):
        parse_plan(document)
    document["secure_aggregation"] = {"protocol": "secagg_plus", "threshold": 3}
    graph_choice = parse_plan(document).secagg_graph
    assert graph_choice is not None and graph_choice.complete


def _extra_member(i: int) -> dict[str, str]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from healthfed_common.silo_keys import encode_public_key, public_key_raw

    return {"silo_id": f"extra-{i}", "signing_key": encode_public_key(public_key_raw(Ed25519PrivateKey.generate()))}


@pytest.mark.parametrize("n, t, c", [(16, 14, 1), (20, 18, 0), (24, 21, 2)])
def test_the_derived_graph_stays_connected_whoever_is_removed(n: int, t: int, c: int) -> None:
    choice = choose_graph(GraphRequirement(n, t, c))
    assert not choice.complete, "these cohorts admit a sparse graph"
    ids = tuple(f"s{i:02d}" for i in range(n))
    graph = neighbour_sets(ids, os.urandom(32), choice.degree)
    removable = c + (n - t)
    for removed in itertools.combinations(ids, removable):  # every choice the coordinator has
        assert len(_components(graph, set(ids) - set(removed))) == 1, removed
    # one fewer neighbour and the coordinator could split it: the bound is tight
    with pytest.raises(GraphTooSparse):
        check_degree(GraphRequirement(n, t, c), removable)
    # colluders inside a neighbourhood can never reach its threshold, even with an equivocation
    k, t_loc = choice.degree, choice.neighbourhood_threshold
    assert t_loc is not None and t_loc > c and 2 * t_loc > (k + 1) + c


def test_random_crashes_stop_a_round_no_more_often_than_the_bound() -> None:
    requirement = GraphRequirement(40, 36, 0, correctness_bits=3)
    choice = choose_graph(requirement)
    assert not choice.complete and choice.neighbourhood_threshold is not None
    assert choice.log2_round_failure <= -3
    ids = tuple(f"s{i:02d}" for i in range(40))
    rand = random.Random(11)
    trials, failures = 3000, 0
    for _ in range(trials):
        graph = neighbour_sets(ids, rand.randbytes(32), choice.degree)
        crashed = set(rand.sample(ids, requirement.dropouts))
        if any(len(graph[s] - crashed) < choice.neighbourhood_threshold for s in ids):
            failures += 1
    bound = 2.0 ** choice.log2_round_failure
    assert failures / trials <= bound + 3 * math.sqrt(bound / trials)


def test_exact_hypergeometric_counts() -> None:
    for population, marked, draws in [(10, 3, 4), (30, 0, 5), (30, 30, 5), (50, 17, 49), (7, 7, 0)]:
        assert _hypergeometric_counts(population, marked, draws) == [
            math.comb(marked, x) * math.comb(population - marked, draws - x) for x in range(draws + 1)
        ]


def test_hospital_sized_cohorts_with_the_default_threshold_use_the_complete_graph() -> None:
    for n in range(2, 60):
        t = (2 * n) // 3 + 1
        assert choose_graph(GraphRequirement(n, t, max(0, 2 * t - n - 1))).complete
    sparse = choose_graph(GraphRequirement(50, 48, 2))
    assert (sparse.degree, sparse.neighbourhood_threshold) == (8, 6)
