"""Shared helpers for the secure-aggregation tests: random sessions, inputs and the plain
sum the protocol must reproduce."""

from __future__ import annotations

import os
from typing import Mapping, Sequence

import numpy as np

from healthfed_common.secagg import SessionParams


def make_params(
    n: int,
    threshold: int | None = None,
    bitwidths: Sequence[int] = (16,),
    lengths: Sequence[int] = (32,),
    neighbours: int | None = None,
    session_id: bytes | None = None,
    neighbourhood_threshold: int | None = None,
) -> SessionParams:
    """A session among silos h00..h{n-1} (a strict-majority threshold unless given)."""
    return SessionParams(
        session_id=session_id or os.urandom(32),
        participants=tuple(f"h{i:02d}" for i in range(n)),
        threshold=threshold if threshold is not None else n // 2 + 1,
        bitwidths=tuple(bitwidths),
        vector_lengths=tuple(lengths),
        neighbours=neighbours,
        neighbourhood_threshold=neighbourhood_threshold,
    )


def random_vector(rng: np.random.Generator, bits: int, length: int) -> np.ndarray:
    """Uniform values in [0, 2^bits) as uint64 (test data only; masks never use numpy)."""
    raw = rng.integers(0, 2**63, size=length, dtype=np.uint64) * np.uint64(2) + rng.integers(
        0, 2, size=length, dtype=np.uint64
    )
    return raw & np.uint64((1 << bits) - 1)


def random_inputs(params: SessionParams, seed: int) -> dict[str, list[np.ndarray]]:
    """One random input per silo and vector."""
    rng = np.random.default_rng(seed)
    return {
        s: [random_vector(rng, b, d) for b, d in zip(params.bitwidths, params.vector_lengths)]
        for s in params.participants
    }


def plain_sum(
    params: SessionParams, inputs: Mapping[str, Sequence[np.ndarray]], silos: Sequence[str]
) -> list[np.ndarray]:
    """Sum mod 2^b with Python integers, independent of the protocol's uint64 arithmetic."""
    out = []
    for j, (b, d) in enumerate(zip(params.bitwidths, params.vector_lengths)):
        totals = [0] * d
        for s in silos:
            for i, value in enumerate(inputs[s][j].tolist()):
                totals[i] += value
        out.append(np.array([t % (1 << b) for t in totals], dtype=np.uint64))
    return out


class Walk:
    """A session stepped by hand, phase by phase, so tests can tamper between phases. Signed
    like production (each silo its own Ed25519 key, every party verifying) unless
    `authenticated=False`."""

    def __init__(self, params: SessionParams, seed: int = 0, *, authenticated: bool = True) -> None:
        from healthfed_common.secagg import SecAggClient, SecAggServer
        from healthfed_common.secagg.simulation import signing_hooks

        self.params = params
        self.inputs = random_inputs(params, seed)
        if authenticated:
            self.signers, self.verify = signing_hooks(params.participants)
            self.server = SecAggServer(params, verify=self.verify)
            self.clients = {
                s: SecAggClient(s, params, sign=self.signers[s], verify=self.verify) for s in params.participants
            }
        else:
            self.server = SecAggServer(params)
            self.clients = {s: SecAggClient(s, params) for s in params.participants}

    def advertise(self, silos: Sequence[str] | None = None) -> None:
        for s in silos if silos is not None else self.params.participants:
            self.server.receive_advertisement(self.clients[s].advertise_keys())
        self.roster = self.server.roster()

    def share(self, silos: Sequence[str] | None = None) -> None:
        self.sent = {}
        for s in silos if silos is not None else self.roster.silos:
            self.sent[s] = self.clients[s].share_keys(self.roster)
            self.server.receive_shares(s, self.sent[s])
        self.inboxes = {s: self.server.inbox_for(s) for s in self.sent}

    def mask(self, silos: Sequence[str] | None = None) -> None:
        self.masked = {}
        for s in silos if silos is not None else list(self.inboxes):
            self.masked[s] = self.clients[s].masked_input(self.inboxes[s], self.inputs[s])
            self.server.receive_masked_input(self.masked[s])
        self.split = self.server.unmask_request()

    def consist(self, silos: Sequence[str] | None = None) -> None:
        """The consistency round: survivors sign the split; `request` then carries the
        signatures, as the unmask phase does."""
        for s in silos if silos is not None else self.split.survivors:
            self.server.receive_consistency_signature(self.clients[s].sign_consistency(self.split))
        self.request = self.server.signed_unmask_request()
