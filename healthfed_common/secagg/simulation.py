"""Run a whole session in one process: the reference round used by the property tests and
the benchmark, and a readable account of the message flow the transport must reproduce.

`drop_at[silo]` names the first phase a silo misses: "advertise" (never advertises),
"share" (advertised, sends no shares), "masked" (shared keys, sends no masked input),
"consistency" (sent its masked input, never signs the survivor set) or "unmask" (signed,
never answers the unmask request). `authenticated=True` gives every silo an Ed25519 key and
runs the signed protocol the federation uses (advertisements and consistency signatures
verified by every party).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Literal, Mapping, ParamSpec, Sequence, TypeVar

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from healthfed_common.secagg.client import SecAggClient
from healthfed_common.silo_keys import public_key_raw, verify_signature
from healthfed_common.secagg.messages import U64Array
from healthfed_common.secagg.params import SessionParams
from healthfed_common.secagg.server import SecAggServer

Phase = Literal["advertise", "share", "masked", "consistency", "unmask"]
PHASES: tuple[Phase, ...] = ("advertise", "share", "masked", "consistency", "unmask")
_P = ParamSpec("_P")
_R = TypeVar("_R")


@dataclass
class RoundResult:
    """The sums, whose inputs they contain, and the compute time of each party (seconds)."""

    sums: list[U64Array]
    counted: tuple[str, ...]
    silo_seconds: dict[str, float] = field(default_factory=dict)
    server_seconds: float = 0.0
    # per phase: the slowest silo's compute and the aggregator's (what that phase adds to a round)
    phase_silo_max_seconds: dict[str, float] = field(default_factory=dict)
    phase_server_seconds: dict[str, float] = field(default_factory=dict)


def _present(silo: str, phase: Phase, drop_at: Mapping[str, Phase]) -> bool:
    missed = drop_at.get(silo)
    return missed is None or PHASES.index(phase) < PHASES.index(missed)


def signing_hooks(
    participants: Sequence[str],
) -> tuple[dict[str, Callable[[bytes], bytes]], Callable[[str, bytes, bytes], bool]]:
    """Fresh Ed25519 keys for each silo: its `sign` hook and one `verify` hook that checks any
    silo's signature under that silo's public key (what the plan's cohort pins)."""
    keys = {s: Ed25519PrivateKey.generate() for s in participants}
    public = {s: public_key_raw(k) for s, k in keys.items()}

    def verify(silo: str, payload: bytes, signature: bytes) -> bool:
        return silo in public and verify_signature(public[silo], payload, signature)

    return {s: k.sign for s, k in keys.items()}, verify


def run_round(
    params: SessionParams,
    inputs: Mapping[str, Sequence[U64Array]],
    drop_at: Mapping[str, Phase] | None = None,
    *,
    authenticated: bool = False,
    trace: dict[str, object] | None = None,
) -> RoundResult:
    """Simulate every party; raises whatever the protocol raises (e.g. TooFewSurvivors)."""
    drop_at = drop_at or {}
    silo_time = {s: 0.0 for s in params.participants}
    server_time = 0.0

    current: list[str] = ["advertise"]
    phase_silo: dict[str, dict[str, float]] = {p: {} for p in PHASES}
    phase_server: dict[str, float] = {p: 0.0 for p in PHASES}

    def on_silo(silo: str, fn: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        spent = time.perf_counter() - start
        silo_time[silo] += spent
        by_silo = phase_silo[current[0]]
        by_silo[silo] = by_silo.get(silo, 0.0) + spent
        return out

    def on_server(fn: Callable[_P, _R], *args: _P.args, **kwargs: _P.kwargs) -> _R:
        nonlocal server_time
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        spent = time.perf_counter() - start
        server_time += spent
        phase_server[current[0]] += spent
        return out

    if authenticated:
        signers, verify = signing_hooks(params.participants)
        server = SecAggServer(params, verify=verify)
        clients = {
            s: on_silo(s, SecAggClient, s, params, sign=signers[s], verify=verify) for s in params.participants
        }
    else:
        server = SecAggServer(params)
        clients = {s: on_silo(s, SecAggClient, s, params) for s in params.participants}
    live = [s for s in params.participants if _present(s, "advertise", drop_at)]
    for s in live:
        on_server(server.receive_advertisement, on_silo(s, clients[s].advertise_keys))
    roster = on_server(server.roster)
    if trace is not None:  # the SecAgg+ graph follows from the silos' nonces: oracles need it
        trace["graph"] = server.graph
    current[0] = "share"
    live = [s for s in live if _present(s, "share", drop_at)]
    for s in live:
        on_server(server.receive_shares, s, on_silo(s, clients[s].share_keys, roster))
    current[0] = "masked"
    live = [s for s in live if _present(s, "masked", drop_at)]
    inboxes = {s: on_server(server.inbox_for, s) for s in live}
    for s in live:
        on_server(server.receive_masked_input, on_silo(s, clients[s].masked_input, inboxes[s], inputs[s]))
    current[0] = "consistency"
    split = on_server(server.unmask_request)
    live = [s for s in live if _present(s, "consistency", drop_at)]
    for s in live:
        on_server(server.receive_consistency_signature, on_silo(s, clients[s].sign_consistency, split))
    request = on_server(server.signed_unmask_request)
    current[0] = "unmask"
    live = [s for s in live if _present(s, "unmask", drop_at)]
    for s in live:
        on_server(server.receive_unmask_response, on_silo(s, clients[s].unmask, request))
    sums = on_server(server.finish)
    return RoundResult(
        sums, server.counted, silo_time, server_time,
        {p: max(phase_silo[p].values(), default=0.0) for p in PHASES}, dict(phase_server),
    )
