"""Malformed, replayed, cross-round, late and misaddressed messages are rejected with
ProtocolViolation (a ValueError with a stable code) -- on the aggregator and on the silo."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from healthfed_common.secagg import (
    KeyRoster,
    MaskedInput,
    PhaseOrderError,
    ProtocolViolation,
    SecAggClient,
    SecAggServer,
    ShareInbox,
    UnmaskRequest,
    UnmaskResponse,
)
from healthfed_common.secagg.errors import InvalidInput

from .helpers import Walk, make_params


def walk_to(phase: str, n: int = 4, t: int = 3, **kw: object) -> Walk:
    walk = Walk(make_params(n, t, (16, 64), (8, 3), **kw))  # type: ignore[arg-type]
    if phase in ("share", "masked", "unmask"):
        walk.advertise()
    if phase in ("masked", "unmask"):
        walk.share()
    if phase == "unmask":
        walk.mask()
        walk.consist()
    return walk


def _violation(fn, *args: object, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ProtocolViolation, match=match) as err:
        fn(*args)
    assert err.value.code.startswith("SECAGG_") and isinstance(err.value, ValueError)


# -- key advertisement -------------------------------------------------------------------------
def test_duplicate_advertisement() -> None:
    walk = walk_to("advertise")
    adv = walk.clients["h00"].advertise_keys()
    walk.server.receive_advertisement(adv)
    _violation(walk.server.receive_advertisement, adv, match="duplicate")


def test_advertisement_from_another_round() -> None:
    walk, other = walk_to("advertise"), walk_to("advertise")
    _violation(walk.server.receive_advertisement, other.clients["h00"].advertise_keys(), match="another session")


def test_advertisement_from_unknown_silo() -> None:
    walk = walk_to("advertise")
    adv = dataclasses.replace(walk.clients["h00"].advertise_keys(), sender="mallory")
    _violation(walk.server.receive_advertisement, adv, match="unknown silo")


def test_late_advertisement() -> None:
    walk = walk_to("advertise")
    walk.advertise(["h00", "h01", "h02"])
    _violation(walk.server.receive_advertisement, walk.clients["h03"].advertise_keys(), match="closed")


def test_malformed_keys() -> None:
    walk = walk_to("advertise")
    adv = dataclasses.replace(walk.clients["h00"].advertise_keys(), c_public=b"short")
    _violation(walk.server.receive_advertisement, adv, match="malformed")


# -- shares ------------------------------------------------------------------------------------
def test_share_for_unknown_peer() -> None:
    walk = walk_to("share")
    shares = walk.clients["h00"].share_keys(walk.roster)
    bad = shares[:-1] + (dataclasses.replace(shares[-1], recipient="h99"),)
    _violation(walk.server.receive_shares, "h00", bad, match="unknown or non-neighbour")


def test_share_for_silo_missing_from_roster() -> None:
    walk = walk_to("advertise")
    walk.advertise(["h00", "h01", "h02"])
    shares = walk.clients["h00"].share_keys(walk.roster)
    extra = dataclasses.replace(shares[0], recipient="h03")
    _violation(walk.server.receive_shares, "h00", shares + (extra,), match="h03")


def test_shares_from_silo_not_in_roster() -> None:
    walk = walk_to("advertise")
    walk.advertise(["h00", "h01", "h02"])
    _violation(walk.server.receive_shares, "h03", (), match="not in the roster")


def test_duplicate_and_replayed_shares() -> None:
    walk = walk_to("share")
    shares = walk.clients["h00"].share_keys(walk.roster)
    walk.server.receive_shares("h00", shares)
    _violation(walk.server.receive_shares, "h00", shares, match="duplicate")
    twice = walk.clients["h01"].share_keys(walk.roster)
    _violation(walk.server.receive_shares, "h01", twice + twice[:1], match="two shares")


def test_share_from_another_round_and_forged_sender() -> None:
    walk, other = walk_to("share"), walk_to("share")
    foreign = other.clients["h00"].share_keys(other.roster)
    _violation(walk.server.receive_shares, "h00", foreign, match="another session")
    own = walk.clients["h01"].share_keys(walk.roster)
    _violation(walk.server.receive_shares, "h02", own, match="claiming")


def test_incomplete_shares() -> None:
    walk = walk_to("share")
    shares = walk.clients["h00"].share_keys(walk.roster)
    _violation(walk.server.receive_shares, "h00", shares[:-1], match="no share for")


def test_client_rejects_foreign_or_inconsistent_roster() -> None:
    walk, other = walk_to("share"), walk_to("share")
    _violation(walk.clients["h00"].share_keys, other.roster, match="another session")
    r = walk.roster
    unknown = dataclasses.replace(
        r, silos=r.silos + ("h99",), c_public={**r.c_public, "h99": b"x" * 32},
        s_public={**r.s_public, "h99": b"y" * 32}, nonces={**r.nonces, "h99": b"n" * 32},
        commitments={**r.commitments, "h99": b"c" * 32},
    )
    _violation(walk.clients["h01"].share_keys, unknown, match="unknown silos")


def test_client_rejects_misaddressed_or_padded_inbox() -> None:
    walk = walk_to("masked")
    box = walk.inboxes["h00"]
    _violation(walk.clients["h01"].masked_input, box, walk.inputs["h01"], match="addressed to")
    padded = ShareInbox(box.session_id, "h00", box.senders, {**box.ciphertexts, "h00": b"\0" * 80})
    _violation(walk.clients["h00"].masked_input, padded, walk.inputs["h00"], match="unexpected peers")


# -- masked input ------------------------------------------------------------------------------
def test_wrong_length_vector_rejected_by_server() -> None:
    walk = walk_to("masked")
    good = walk.clients["h00"].masked_input(walk.inboxes["h00"], walk.inputs["h00"])
    short = MaskedInput(good.session_id, "h00", (good.vectors[0][:-1], good.vectors[1]))
    _violation(walk.server.receive_masked_input, short, match="length 7, expected 8")
    few = MaskedInput(good.session_id, "h00", good.vectors[:1])
    _violation(walk.server.receive_masked_input, few, match="expected 2 vectors")
    wide = MaskedInput(good.session_id, "h00", (good.vectors[0] | np.uint64(1 << 20), good.vectors[1]))
    _violation(walk.server.receive_masked_input, wide, match="outside")
    signed = MaskedInput(good.session_id, "h00", (good.vectors[0].astype(np.int64), good.vectors[1]))
    _violation(walk.server.receive_masked_input, signed, match="uint64")
    walk.server.receive_masked_input(good)
    _violation(walk.server.receive_masked_input, good, match="duplicate")


def test_wrong_length_input_rejected_by_client_and_retry_allowed() -> None:
    walk = walk_to("masked")
    x = walk.inputs["h00"]
    with pytest.raises(InvalidInput):
        walk.clients["h00"].masked_input(walk.inboxes["h00"], [x[0][:-1], x[1]])
    with pytest.raises(InvalidInput):
        walk.clients["h00"].masked_input(walk.inboxes["h00"], [x[0] | np.uint64(1 << 16), x[1]])
    walk.clients["h00"].masked_input(walk.inboxes["h00"], x)  # nothing was released: retry works


def test_masked_input_from_previous_round_replayed() -> None:
    walk, other = walk_to("masked"), walk_to("masked")
    old = other.clients["h00"].masked_input(other.inboxes["h00"], other.inputs["h00"])
    _violation(walk.server.receive_masked_input, old, match="another session")


def test_masked_input_from_silo_that_did_not_share() -> None:
    walk = walk_to("share")
    walk.share(["h00", "h01", "h02"])
    x = walk.inputs["h00"]
    forged = MaskedInput(walk.params.session_id, "h03", tuple(v.copy() for v in x))
    _violation(walk.server.receive_masked_input, forged, match="did not share")
    _violation(walk.server.inbox_for, "h03", match="did not share keys")


# -- unmasking ---------------------------------------------------------------------------------
def test_unmask_responses_checked() -> None:
    walk = walk_to("unmask")
    resp = walk.clients["h00"].unmask(walk.request)
    walk.server.receive_unmask_response(resp)
    _violation(walk.server.receive_unmask_response, resp, match="duplicate")
    other = walk.clients["h01"].unmask(walk.request)
    trimmed = UnmaskResponse(other.session_id, "h01", dict(list(other.self_mask_shares.items())[:-1]), {})
    _violation(walk.server.receive_unmask_response, trimmed, match="does not match")
    foreign = dataclasses.replace(other, session_id=bytes(32))
    _violation(walk.server.receive_unmask_response, foreign, match="another session")


def test_unmask_request_with_unknown_peer_or_other_session() -> None:
    walk = walk_to("unmask")
    r = walk.request
    _violation(walk.clients["h00"].unmask, UnmaskRequest(r.session_id, r.survivors, ("h99",)), match="unknown")
    _violation(walk.clients["h00"].unmask, UnmaskRequest(bytes(32), r.survivors, r.dropped), match="another session")


def test_phase_order_enforced() -> None:
    params = make_params(3, 2)
    server = SecAggServer(params)
    with pytest.raises(PhaseOrderError):
        server.unmask_request()
    client = SecAggClient("h00", params)
    with pytest.raises(PhaseOrderError):
        client.unmask(UnmaskRequest(params.session_id, params.participants, ()))
    client.advertise_keys()
    with pytest.raises(PhaseOrderError):
        client.advertise_keys()


def test_encrypted_share_tampering_detected() -> None:
    walk = walk_to("masked")
    box = walk.inboxes["h00"]
    peer = next(iter(box.ciphertexts))
    blob = bytearray(box.ciphertexts[peer])
    blob[-1] ^= 1
    bad = ShareInbox(box.session_id, "h00", box.senders, {**box.ciphertexts, peer: bytes(blob)})
    _violation(walk.clients["h00"].masked_input, bad, walk.inputs["h00"], match="authentication")
