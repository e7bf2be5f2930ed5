"""What a curious or malicious aggregator must not get: masked vectors are indistinguishable
from uniform, no silo hands out both kinds of share for a peer or answers a request naming
fewer than t survivors, no silo answers an unmask request without t consistency signatures over
the one split it signed, substituted keys and nonces are caught, shares are bound to session and
recipient, and an abort below the threshold reveals nothing.

Why the chi-square tests are not flaky: the masks are keyed from the OS CSPRNG, so under the
null hypothesis (the PRG is indistinguishable from uniform, which is AES's security) the
statistic is exactly chi-square distributed; the tests reject at alpha = 1e-6, i.e. a correct
implementation fails about once per million runs. Their power is shown by
`test_chi_square_detects_an_unmasked_vector`: a broken mask (none, zero, repeated keystream,
a short-seeded generator's structure) gives statistics orders of magnitude beyond the bound.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Callable

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from scipy.stats import chi2

from healthfed_common.secagg import (
    AuthenticationFailed,
    CommitmentMismatch,
    ConsistencyFailed,
    Equivocation,
    PhaseOrderError,
    ProtocolViolation,
    SecAggClient,
    SecAggServer,
    ShareInbox,
    ShareRequestRefused,
    TooFewSurvivors,
    UnmaskRequest,
)

from .helpers import Walk, make_params

ALPHA = 1e-6


def chi_square(counts: np.ndarray) -> tuple[float, float]:
    expected = counts.sum() / counts.size
    stat = float(((counts - expected) ** 2 / expected).sum())
    return stat, float(chi2.isf(ALPHA, counts.size - 1))


def masked_alone(bits: int, length: int, value: int) -> np.ndarray:
    params = make_params(3, 2, (bits,), (length,))
    walk = Walk(params)
    walk.inputs = {s: [np.full(length, value, dtype=np.uint64)] for s in params.participants}
    walk.advertise()
    walk.share()
    walk.mask()
    return walk.masked["h00"].vectors[0]


@pytest.mark.parametrize("value", [0, 0x5A5A5A5A5A5A5A5A])
def test_masked_vector_bytes_are_uniform(value: int) -> None:
    """1 MiB of one silo's masked 64-bit vector, constant input: 256 byte bins."""
    y = masked_alone(64, 1 << 17, value)
    counts = np.bincount(y.view(np.uint8), minlength=256)
    stat, bound = chi_square(counts)
    assert stat < bound, (stat, bound)


def test_masked_vector_values_are_uniform_in_z_2b() -> None:
    """b = 12 is not byte aligned: test the values themselves, 4096 bins x 64 expected."""
    y = masked_alone(12, 1 << 18, 0)
    assert int(y.max()) < 4096
    stat, bound = chi_square(np.bincount(y.astype(np.int64), minlength=4096))
    assert stat < bound, (stat, bound)


def test_chi_square_detects_an_unmasked_vector() -> None:
    """Power: realistic quantized updates (small values around an offset) fail by far."""
    rng = np.random.default_rng(0)
    x = (rng.normal(0, 200, size=1 << 17).astype(np.int64) + (1 << 20)).astype(np.uint64)
    stat, bound = chi_square(np.bincount(x.view(np.uint8), minlength=256))
    assert stat > 100 * bound


def _after_masking(n: int = 5, t: int = 3) -> Walk:
    walk = Walk(make_params(n, t))
    walk.advertise()
    walk.share()
    walk.mask()
    return walk


def _after_consistency(n: int = 5, t: int = 3) -> Walk:
    walk = _after_masking(n, t)
    walk.consist()
    return walk


def test_both_shares_of_one_peer_in_one_request_refused() -> None:
    walk = _after_masking()
    ids = walk.params.participants
    evil = UnmaskRequest(walk.params.session_id, ids, (ids[1],))
    with pytest.raises(ShareRequestRefused) as err:
        walk.clients[ids[0]].sign_consistency(evil)
    assert err.value.code == "SECAGG_SHARE_REQUEST_REFUSED"
    assert isinstance(err.value, PermissionError)


def test_both_shares_across_two_requests_refused() -> None:
    """A curious aggregator first collects the self-mask share of h01 ("survived"), then asks
    the same silo for its key share ("dropped"): refused; a retried request is answered."""
    walk = _after_consistency()
    ids = walk.params.participants
    first = walk.clients["h00"].unmask(walk.request)
    assert "h01" in first.self_mask_shares
    assert walk.clients["h00"].unmask(walk.request) == first  # idempotent retry
    second = UnmaskRequest(walk.params.session_id, tuple(s for s in ids if s != "h01"), ("h01",))
    with pytest.raises(ShareRequestRefused):
        walk.clients["h00"].unmask(second)


def test_equivocating_aggregator_cannot_reach_threshold_for_both() -> None:
    """The aggregator tells h00-h02 "h04 survived" and h03, h04 "h04 dropped" (n=5, t=3).
    In the consistency round h03 signs the lie and h04 refuses it (it sent its input); an
    unmask request for the lie then carries 1 valid signature, not t: nobody reveals a key
    share of h04, while the honest split still completes."""
    walk = _after_masking()
    sid, ids = walk.params.session_id, walk.params.participants
    honest = UnmaskRequest(sid, ids, ())
    lie = UnmaskRequest(sid, ids[:4], ("h04",))
    honest_sigs = {s: walk.clients[s].sign_consistency(honest).signature for s in ids[:3]}
    lie_sigs: dict[str, bytes] = {}
    for s in ids[3:]:
        try:
            lie_sigs[s] = walk.clients[s].sign_consistency(lie).signature
        except ShareRequestRefused:
            pass
    assert set(lie_sigs) == {"h03"}
    forged = UnmaskRequest(sid, lie.survivors, lie.dropped, {**lie_sigs, **honest_sigs})
    with pytest.raises(ConsistencyFailed) as err:
        walk.clients["h03"].unmask(forged)
    assert err.value.code == "SECAGG_CONSISTENCY_FAILED"
    for s in ids[:3]:  # the honest split has t signatures and is answered
        assert "h04" in walk.clients[s].unmask(UnmaskRequest(sid, ids, (), honest_sigs)).self_mask_shares


def test_silo_signs_one_split_per_session() -> None:
    """Asked to sign a second, different split, a silo refuses (equivocation)."""
    walk = _after_masking()
    sid, ids = walk.params.session_id, walk.params.participants
    walk.clients["h00"].sign_consistency(UnmaskRequest(sid, ids, ()))
    with pytest.raises(Equivocation) as err:
        walk.clients["h00"].sign_consistency(UnmaskRequest(sid, ids[:4], ids[4:]))
    assert err.value.code == "SECAGG_EQUIVOCATION"


def test_unmask_needs_t_valid_signatures_over_the_signed_split() -> None:
    """Too few signatures, signatures by non-survivors, forged bytes or signatures over
    another split: all refused before any share is revealed."""
    walk = _after_masking()
    sid, ids = walk.params.session_id, walk.params.participants
    split = walk.split
    sigs = {s: walk.clients[s].sign_consistency(split).signature for s in ids}
    t = walk.params.threshold
    few = dict(list(sigs.items())[: t - 1])
    with pytest.raises(ConsistencyFailed):
        walk.clients["h00"].unmask(UnmaskRequest(sid, split.survivors, split.dropped, few))
    garbage = {s: bytes(64) for s in ids}
    with pytest.raises(ConsistencyFailed):
        walk.clients["h00"].unmask(UnmaskRequest(sid, split.survivors, split.dropped, garbage))
    other = {s: walk.signers[s](b"some other split") for s in ids}
    with pytest.raises(ConsistencyFailed):
        walk.clients["h00"].unmask(UnmaskRequest(sid, split.survivors, split.dropped, other))
    assert walk.clients["h00"].unmask(UnmaskRequest(sid, split.survivors, split.dropped, sigs)).self_mask_shares


def test_unmask_before_consistency_refused() -> None:
    walk = _after_masking()
    with pytest.raises(PhaseOrderError):
        walk.clients["h00"].unmask(walk.split)


def test_graph_follows_signed_nonces() -> None:
    """SecAgg+: the neighbour graph is derived from the silos' signed nonces. An aggregator
    that swaps one nonce to steer the graph breaks that silo's signature; a different genuine
    nonce gives a different graph (the aggregator cannot choose it)."""
    params = make_params(9, 7, neighbours=4)
    walk = Walk(params)
    walk.advertise()
    roster = walk.roster
    swapped = dataclasses.replace(roster, nonces={**roster.nonces, "h03": os.urandom(32)})
    with pytest.raises(AuthenticationFailed):
        walk.clients["h00"].share_keys(swapped)
    from healthfed_common.secagg.graph import graph_seed

    seen = {frozenset(params.graph_for(graph_seed(params.session_id, {**roster.nonces, "h03": os.urandom(32)}))["h00"])
            for _ in range(8)}
    assert len(seen) > 1
    assert walk.server.graph == dict(params.graph_for(graph_seed(params.session_id, roster.nonces)))


def test_reconstructed_self_mask_seed_must_open_its_commitment() -> None:
    """A silo whose advertised commitment does not match the seed it shared makes the
    aggregator abort at unmasking instead of outputting a wrong sum."""
    walk = Walk(make_params(4, 3), authenticated=False)
    liar = walk.clients["h02"]
    liar._commitment = bytes(32)  # type: ignore[attr-defined]  # a dishonest silo's advertisement
    walk.advertise()
    walk.share()
    walk.mask()
    walk.consist()
    for s in walk.request.survivors:
        walk.server.receive_unmask_response(walk.clients[s].unmask(walk.request))
    with pytest.raises(CommitmentMismatch):
        walk.server.finish()


def test_request_with_fewer_than_t_survivors_refused() -> None:
    walk = _after_masking()
    ids = walk.params.participants
    small = UnmaskRequest(walk.params.session_id, ids[:2], ids[2:])
    with pytest.raises(ShareRequestRefused):
        walk.clients["h00"].sign_consistency(small)


def test_request_claiming_this_silo_dropped_refused() -> None:
    walk = _after_masking()
    ids = walk.params.participants
    claim = UnmaskRequest(walk.params.session_id, ids[1:], ids[:1])
    with pytest.raises(ShareRequestRefused):
        walk.clients["h00"].sign_consistency(claim)


def test_second_masked_input_refused() -> None:
    walk = _after_masking()
    with pytest.raises(PhaseOrderError):
        walk.clients["h00"].masked_input(walk.inboxes["h00"], walk.inputs["h00"])


def test_roster_replacing_own_key_detected() -> None:
    walk = Walk(make_params(4, 3))
    walk.advertise()
    forged = dict(walk.roster.s_public)
    forged["h00"] = walk.roster.s_public["h01"][::-1]
    bad = dataclasses.replace(walk.roster, s_public=forged)
    with pytest.raises(AuthenticationFailed):
        walk.clients["h00"].share_keys(bad)


def _signing(params_ids: tuple[str, ...]) -> tuple[dict[str, Ed25519PrivateKey], Callable[[str, bytes, bytes], bool]]:
    long_term = {s: Ed25519PrivateKey.generate() for s in params_ids}
    public = {s: k.public_key() for s, k in long_term.items()}

    def verify(peer: str, payload: bytes, signature: bytes) -> bool:
        try:
            public[peer].verify(signature, payload)
            return True
        except Exception:  # InvalidSignature or malformed signature: both mean "no"
            return False

    return long_term, verify


def test_signed_advertisements_stop_key_substitution() -> None:
    """A malicious aggregator swaps h01's masking key for one it controls: with signed
    advertisements every other silo refuses the roster."""
    params = make_params(4, 3)
    long_term, verify = _signing(params.participants)
    server = SecAggServer(params, verify=verify)
    clients = {
        s: SecAggClient(s, params, sign=long_term[s].sign, verify=verify)
        for s in params.participants
    }
    for c in clients.values():
        server.receive_advertisement(c.advertise_keys())
    roster = server.roster()
    shares = clients["h00"].share_keys(roster)  # genuine roster accepted
    assert len(shares) == 3
    attacker = SecAggClient("h01", params).advertise_keys()
    forged = dict(roster.s_public)
    forged["h01"] = attacker.s_public
    bad = dataclasses.replace(roster, s_public=forged)
    with pytest.raises(AuthenticationFailed):
        clients["h02"].share_keys(bad)


def test_server_rejects_unsigned_advertisement_when_verifying() -> None:
    params = make_params(3, 2)
    _, verify = _signing(params.participants)
    server = SecAggServer(params, verify=verify)
    with pytest.raises(AuthenticationFailed):
        server.receive_advertisement(SecAggClient("h00", params).advertise_keys())


def test_share_redirected_to_another_recipient_fails_authentication() -> None:
    walk = Walk(make_params(4, 3))
    walk.advertise()
    walk.share()
    box = walk.inboxes["h01"]
    stolen = dict(box.ciphertexts)
    stolen["h02"] = walk.inboxes["h03"].ciphertexts["h02"]  # h02's share meant for h03
    with pytest.raises(AuthenticationFailed):
        walk.clients["h01"].masked_input(ShareInbox(box.session_id, "h01", box.senders, stolen), walk.inputs["h01"])


def test_share_replayed_from_another_session_fails() -> None:
    """Same silos, next round: old ciphertexts relabelled with the new session id do not
    decrypt (keys and associated data are bound to the session)."""
    old = Walk(make_params(3, 2))
    old.advertise()
    old.share()
    new = Walk(make_params(3, 2))
    new.advertise()
    new.share()
    box = new.inboxes["h00"]
    replay = ShareInbox(box.session_id, "h00", box.senders, dict(old.inboxes["h00"].ciphertexts))
    with pytest.raises(AuthenticationFailed):
        new.clients["h00"].masked_input(replay, new.inputs["h00"])


def test_abort_below_threshold_reveals_nothing() -> None:
    """Only 2 of 5 masked inputs (t=3): the aggregator aborts before asking for any share;
    even a forged request naming 2 survivors is refused by every silo; the running sum is
    discarded and the session stays aborted."""
    params = make_params(5, 3)
    walk = Walk(params)
    walk.advertise()
    walk.share()
    for s in ("h00", "h01"):
        walk.server.receive_masked_input(walk.clients[s].masked_input(walk.inboxes[s], walk.inputs[s]))
    with pytest.raises(TooFewSurvivors) as err:
        walk.server.unmask_request()
    assert err.value.code == "SECAGG_TOO_FEW_SURVIVORS" and isinstance(err.value, RuntimeError)
    forged = UnmaskRequest(params.session_id, ("h00", "h01"), ("h02", "h03", "h04"))
    for s in ("h00", "h01"):
        with pytest.raises(ShareRequestRefused):
            walk.clients[s].sign_consistency(forged)
    with pytest.raises(TooFewSurvivors):
        walk.server.finish()
    assert walk.server.counted == ()
