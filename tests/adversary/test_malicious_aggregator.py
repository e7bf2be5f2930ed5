"""A malicious aggregator against a real silo (issue 11, item 8; threat model: ../shared/notes).

Each test mounts one attack from the issue with the scripted aggregator of `harness.py` and
asserts three things: the silo answers with a `Refusal` carrying the specific code, the silo's
own audit log holds a `round.refused` entry with that code, and, where it means something, the
attacker ends up unable to compute the victim's update. Cohort: the victim, two honest silos
and one colluder whose signing key the attacker holds (n = 4, t = floor(2n/3) + 1 = 3: the
colluder alone is below every threshold that matters).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from healthfed_common.learning_process import FederatedComputations
from healthfed_common.plan import Plan
from healthfed_common.secagg import SecAggClient, SessionParams, keys
from healthfed_common.secagg.graph import graph_seed
from healthfed_common.secagg.messages import EncryptedShare, KeyRoster, ShareInbox, UnmaskRequest
from healthfed_common.wire import codec
from healthfed_common.wire.messages import PROTOCOL_VERSION, Refusal, SecAggReply, TrainResult
from healthfed_common.silo_keys import encode_public_key
from tests.adversary.harness import (
    APPROVAL_POLICY_YAML,
    VICTIM,
    Peer,
    Session,
    VictimSilo,
    adversary_plan,
    assert_refused,
    build_roster,
    derive_session,
    plain_sum,
    route_shares,
    session_offer,
    sign_split,
    signing_key,
    traced_computations,
    unmask_sum,
)

HONEST_1, HONEST_2, COLLUDER = "honest-1", "honest-2", "colluder"
COHORT = (COLLUDER, HONEST_1, HONEST_2, VICTIM)

# The refusal codes the silo must send (healthfed_common/secagg/errors.py and the runner).
SESSION_MISMATCH = "SECAGG_SESSION_MISMATCH"
ALREADY_MASKED = "SECAGG_UPDATE_ALREADY_MASKED"
SIGNATURE_INVALID = "SECAGG_AUTHENTICATION_FAILED"
TOO_FEW = "SECAGG_TOO_FEW_SURVIVORS"
VIOLATION = "SECAGG_PROTOCOL_VIOLATION"
EQUIVOCATION = "SECAGG_EQUIVOCATION"
CONSISTENCY_FAILED = "SECAGG_CONSISTENCY_FAILED"
UNKNOWN_SESSION = "SECAGG_UNKNOWN_SESSION"
ROUND_OUT_OF_RANGE = "ROUND_OUT_OF_RANGE"
ATTEMPT_OUT_OF_RANGE = "ATTEMPT_OUT_OF_RANGE"


@pytest.fixture(scope="module")
def plan() -> Plan:
    return adversary_plan(COHORT, rounds=3, max_round_attempts=3)


@pytest.fixture(scope="module")
def computations(plan: Plan) -> FederatedComputations:
    return traced_computations(plan)  # traced once; new victims start with the entry (harness)


@pytest.fixture(scope="module")
def trained_state(tmp_path_factory: pytest.TempPathFactory, plan: Plan, computations: FederatedComputations) -> Path:
    """A victim's state folder after it trained round 1 on the initial model (charged, stored):
    tests that need the victim's advertisement copy it, so a re-offered round 1 re-sends the
    stored update through the real runner instead of training again (~3 s per test)."""
    folder = tmp_path_factory.mktemp("trained-victim")
    silo = VictimSilo.open(folder)
    try:
        assert isinstance(Session.start(silo, plan, computations).offer(), TrainResult)
    finally:
        silo.close()
    return silo.state


@pytest.fixture
def victim(tmp_path: Path, trained_state: Path) -> Iterator[VictimSilo]:
    silo = VictimSilo.open(tmp_path, template=trained_state)
    yield silo
    silo.close()


@pytest.fixture
def fresh_victim(tmp_path: Path) -> Iterator[VictimSilo]:
    silo = VictimSilo.open(tmp_path)
    yield silo
    silo.close()


def refused_in_audit(victim: VictimSilo, code: str) -> None:
    assert code in victim.refusal_codes(), f"no round.refused {code} in the silo's audit log: {victim.refusal_codes()}"


def masked_session(victim: VictimSilo, plan: Plan, computations: FederatedComputations, **kwargs: object) -> Session:
    """A session run honestly up to the victim's masked input (its update is now masked)."""
    session = Session.start(victim, plan, computations, **kwargs)  # type: ignore[arg-type]
    assert isinstance(session.offer(), TrainResult)
    assert isinstance(session.share_keys(), SecAggReply)
    assert isinstance(session.masked_input(), SecAggReply)
    return session


# -- the honest path -------------------------------------------------------------------------
def test_honest_round_unmasks_exactly_the_sum(fresh_victim: VictimSilo, plan: Plan, computations: FederatedComputations) -> None:
    victim = fresh_victim
    session = Session.start(victim, plan, computations)
    total = session.run_honestly()
    expected = plain_sum(session.params, [victim.released_vectors(plan, 1), *(p.vectors for p in session.peers.values())])
    assert all(np.array_equal(a, b) for a, b in zip(total, expected))
    assert victim.refusal_codes() == []
    assert len(victim.ledger_charges(plan)) == 1
    # the silo released its update only masked: the train result carries no integer parts
    assert any(e["kind"] == "payload.released" for e in victim.audit_events())


# -- roster choice: invented peers, tiny rosters, sub-cohorts -------------------------------
def test_roster_with_an_invented_peer_is_refused(victim: VictimSilo, plan: Plan, computations: FederatedComputations) -> None:
    session = Session.start(victim, plan, computations, peers=[])
    session.offer()
    ghost = SecAggClient("ghost", replace(session.params, participants=(*session.params.participants, "ghost")),
                         sign=signing_key("ghost").sign)
    roster = build_roster(session.params.session_id, [session.ads[VICTIM], ghost.advertise_keys()])
    assert_refused(session.share_keys(roster), VIOLATION)
    refused_in_audit(victim, VIOLATION)


def test_roster_below_the_threshold_is_refused(victim: VictimSilo, plan: Plan, computations: FederatedComputations) -> None:
    session = Session.start(victim, plan, computations, peers=[COLLUDER])
    session.offer()
    # victim + colluder: two valid, signed advertisements, below t = 3; the "sum" would be the
    # victim's update plus the colluder's known input
    roster = build_roster(session.params.session_id, session.ads.values())
    assert_refused(session.phase("share_keys", roster), TOO_FEW)
    refused_in_audit(victim, TOO_FEW)
    assert VICTIM not in session.bundles


@pytest.mark.parametrize("change", ["sub_cohort", "lower_threshold", "other_session_id"])
def test_session_other_than_the_cohort_is_refused(
    victim: VictimSilo, plan: Plan, computations: FederatedComputations, change: str
) -> None:
    session = Session.start(victim, plan, computations)
    charges = len(victim.ledger_charges(plan))
    offer = session_offer(session.params)
    if change == "sub_cohort":
        offer = replace(offer, participants=(COLLUDER, VICTIM), threshold=2)
    elif change == "lower_threshold":
        offer = replace(offer, threshold=2)
    else:
        offer = replace(offer, session_id=os.urandom(32))
    answer = session.offer(session.train_task(secagg=offer))
    assert_refused(answer, SESSION_MISMATCH)
    refused_in_audit(victim, SESSION_MISMATCH)
    assert len(victim.ledger_charges(plan)) == charges  # refused before training: nothing spent


def test_round_without_secure_aggregation_is_refused(victim: VictimSilo, plan: Plan, computations: FederatedComputations) -> None:
    session = Session.start(victim, plan, computations)
    answer = session.offer(session.train_task(secagg=None))
    assert_refused(answer, "SECURE_AGGREGATION_REQUIRED")
    assert not (isinstance(answer, TrainResult) and answer.secure_parts)


@pytest.mark.parametrize("attack,code", [
    ("cohort_without_victim", "NOT_IN_COHORT"), ("cohort_pins_another_key", "COHORT_KEY_MISMATCH"),
    ("plan_hash_of_another_plan", "PLAN_HASH_MISMATCH"), ("other_fingerprint", "FINGERPRINT_MISMATCH"),
])
def test_plan_and_cohort_checks_come_first(
    victim: VictimSilo, plan: Plan, computations: FederatedComputations, attack: str, code: str
) -> None:
    """A plan whose cohort leaves the victim out or pins a key the coordinator made for it, a
    plan that does not hash to the announced hash, another computation: refused before any data
    is read or budget spent (no tracing needed: these are checked first)."""
    session = Session.start(victim, plan, computations)
    charges = len(victim.ledger_charges(plan))
    task = session.train_task()
    if attack == "cohort_without_victim":
        other = adversary_plan((COLLUDER, HONEST_1, HONEST_2), rounds=3, max_round_attempts=3)
        task = replace(task, plan_json=other.canonical_bytes(), plan_hash=other.plan_hash)
    elif attack == "cohort_pins_another_key":
        document = plan.model_dump(mode="json")
        document["cohort"] = [m | ({"signing_key": encode_public_key(signing_key("coordinator-made"))} if m["silo_id"] == VICTIM else {})
                              for m in document["cohort"]]
        other = Plan.model_validate(document)
        task = replace(task, plan_json=other.canonical_bytes(), plan_hash=other.plan_hash)
    elif attack == "plan_hash_of_another_plan":
        other = adversary_plan(COHORT, rounds=100, max_round_attempts=3)
        task = replace(task, plan_json=other.canonical_bytes())
    else:
        task = replace(task, fingerprint="0" * 64)
    assert_refused(victim.ask(task), code)
    refused_in_audit(victim, code)
    assert len(victim.ledger_charges(plan)) == charges


def test_silo_without_signing_key_refuses_secure_rounds(tmp_path: Path, plan: Plan, computations: FederatedComputations) -> None:
    silo = VictimSilo.open(tmp_path, with_signing_key=False)
    try:
        assert_refused(Session.start(silo, plan, computations).offer(), "SIGNING_KEY_MISSING")
        refused_in_audit(silo, "SIGNING_KEY_MISSING")
    finally:
        silo.close()


def test_threshold_below_the_hospitals_minimum_is_refused(tmp_path: Path, plan: Plan, computations: FederatedComputations) -> None:
    policy = APPROVAL_POLICY_YAML.replace("min_secure_aggregation_threshold: 2", "min_secure_aggregation_threshold: 4")
    silo = VictimSilo.open(tmp_path, approval_policy=policy)
    try:
        # the plan's t is 3: the approval policy rejects the plan (the runner re-checks it too)
        assert_refused(Session.start(silo, plan, computations).offer(), "SECAGG_THRESHOLD_TOO_LOW")
        refused_in_audit(silo, "SECAGG_THRESHOLD_TOO_LOW")
    finally:
        silo.close()


def test_phase_for_an_unknown_session_is_refused(victim: VictimSilo, plan: Plan, computations: FederatedComputations) -> None:
    session = Session.start(victim, plan, computations)
    session.offer()
    roster = build_roster(session.params.session_id, session.ads.values())
    assert_refused(session.phase("share_keys", replace(roster, session_id=os.urandom(32))), UNKNOWN_SESSION)
    refused_in_audit(victim, UNKNOWN_SESSION)


# -- re-masking one update in several sessions -----------------------------------------------
def test_update_is_not_masked_again_in_a_new_attempt(victim: VictimSilo, plan: Plan, computations: FederatedComputations) -> None:
    first = masked_session(victim, plan, computations)
    again = Session.start(victim, plan, computations, client_input=first.client_input, attempt=2)
    assert_refused(again.offer(), ALREADY_MASKED)
    refused_in_audit(victim, ALREADY_MASKED)
    assert len(victim.ledger_charges(plan)) == 1


def test_a_released_round_offered_again_from_another_model_is_refused_uncharged(
    victim: VictimSilo, plan: Plan, computations: FederatedComputations
) -> None:
    """The victim released round 1 (trained and charged; its update not yet masked). The
    aggregator retries round 1 with another model, and the session it derives for that model:
    training again would release a second DP update of the same round's records under one
    charge. Refused with ROUND_ALREADY_RELEASED before any training; the ledger still holds
    the one charge and the stored update is still the one released before."""
    released_before = victim.services.released.get(plan.plan_hash, 1)
    assert released_before is not None
    initial = computations.prepare(computations.initialize())
    other = tuple(np.asarray(a) + (np.float32(0.25) if np.asarray(a).dtype == np.float32 else 0) for a in initial)
    session = Session.start(victim, plan, computations, client_input=other, attempt=2)
    answer = assert_refused(session.offer(), "ROUND_ALREADY_RELEASED")
    assert "round 1 " in answer.message and "spend privacy twice" in answer.message
    refused_in_audit(victim, "ROUND_ALREADY_RELEASED")
    assert [c.round for c in victim.ledger_charges(plan)] == [1]
    released_after = victim.services.released.get(plan.plan_hash, 1)
    assert released_after is not None and released_after[0] == released_before[0]


def test_same_session_again_gets_the_same_keys(victim: VictimSilo, plan: Plan, computations: FederatedComputations) -> None:
    """Re-offering the session the update is in (an aggregator restart) returns the very same
    advertisement: same masks, so nothing new to learn; a second inbox is equivocation."""
    first = masked_session(victim, plan, computations)
    again = victim.ask(first.train_task())
    assert isinstance(again, TrainResult) and again.secagg == first.ads[VICTIM]
    other = ShareInbox(first.params.session_id, VICTIM, (VICTIM,), {})
    assert_refused(first.phase("masked_input", other), EQUIVOCATION)


def test_restarted_silo_does_not_mask_again(victim: VictimSilo, plan: Plan, computations: FederatedComputations) -> None:
    """The record that an update was masked is durable: after a restart (session secrets gone)
    even the same session gets a refusal, not fresh keys over the same update."""
    first = masked_session(victim, plan, computations)
    victim.restart()
    assert_refused(victim.ask(first.train_task()), ALREADY_MASKED)
    refused_in_audit(victim, ALREADY_MASKED)


def test_remasking_across_attempts_would_reveal_the_update(
    victim: VictimSilo, plan: Plan, computations: FederatedComputations
) -> None:
    """Sums S1 = v + h1 + c (h2 "dropped"), S2 = v + h2 + c (h1 "dropped") and S3 = h1 + h2 + c
    (victim "dropped") give v = (S1 + S2 - S3 - c) / 2 exactly (2v < 2^B). The attacker needs
    the victim's update in two sessions; the silo gives it to one."""
    s1 = Session.start(victim, plan, computations, attempt=1, peers=[HONEST_1, COLLUDER])
    total_1 = s1.run_honestly()
    colluder = s1.peers[COLLUDER].vectors

    s2 = Session.start(victim, plan, computations, attempt=2, client_input=s1.client_input, peers=[HONEST_2, COLLUDER])
    assert_refused(s2.offer(), ALREADY_MASKED)
    refused_in_audit(victim, ALREADY_MASKED)

    # What the refusal prevents: the same attack against a silo that re-masks its stored
    # update (the pre-v2 runner), played here by a plain SecAggClient holding the victim's update.
    v = victim.released_vectors(plan, 1)
    total_2 = _peers_only_sum(plan, s2.params, [HONEST_2, COLLUDER], undefended_victim=v)
    s3 = Session.start(victim, plan, computations, attempt=3, client_input=s1.client_input)
    total_3 = _peers_only_sum(plan, s3.params, [HONEST_1, HONEST_2, COLLUDER])
    recovered = [
        (((a + b - c - d) & np.uint64((1 << bits) - 1)) >> np.uint64(1))
        for a, b, c, d, bits in zip(total_1, total_2, total_3, colluder, s1.params.bitwidths)
    ]
    assert all(np.array_equal(r, x) for r, x in zip(recovered, v)), "the counterfactual attack must work"
    # ...and with only the sums the silo took part in, v is not determined: S1 - S3 = v - h2
    # mixes in an honest silo's input the attacker does not know.


def _peers_only_sum(
    plan: Plan, params: SessionParams, names: list[str], undefended_victim: list[np.ndarray] | None = None
) -> list[np.ndarray]:
    """Run one session among in-process silos only (the real victim is not asked); with
    `undefended_victim`, a plain client re-masks the victim's stored update in it."""
    members = {s: Peer(s, plan, params, seed=0) for s in names}
    if undefended_victim is not None:
        members[VICTIM] = Peer(VICTIM, plan, params, seed=0)
        members[VICTIM].vectors = undefended_victim
    sid = params.session_id
    ads = [m.client.advertise_keys() for m in members.values()]
    roster = build_roster(sid, ads)
    bundles = {s: m.client.share_keys(roster) for s, m in members.items()}
    masked = {s: m.client.masked_input(route_shares(sid, bundles, s), m.vectors) for s, m in members.items()}
    survivors = tuple(sorted(masked))
    request = UnmaskRequest(sid, survivors, ())
    sigs = {s: m.client.sign_consistency(request).signature for s, m in members.items()}
    signed = UnmaskRequest(sid, survivors, (), sigs)
    responses = {s: m.client.unmask(signed) for s, m in members.items()}
    return unmask_sum(params, roster, masked, responses, survivors, ())


def test_cohort_split_is_refused(victim: VictimSilo, plan: Plan, computations: FederatedComputations) -> None:
    """A session over a sub-cohort (victim + colluder, threshold 2) derived consistently."""
    session = Session.start(victim, plan, computations)
    sub = replace(session.params, participants=(COLLUDER, VICTIM), threshold=2)
    assert_refused(session.offer(session.train_task(secagg=session_offer(sub))), SESSION_MISMATCH)
    refused_in_audit(victim, SESSION_MISMATCH)


# -- key substitution ------------------------------------------------------------------------
@pytest.mark.parametrize("whose", [HONEST_1, VICTIM])
def test_substituted_keys_are_refused(victim: VictimSilo, plan: Plan, computations: FederatedComputations, whose: str) -> None:
    session = Session.start(victim, plan, computations)
    session.offer()
    roster = build_roster(session.params.session_id, session.ads.values())
    _, c_public = keys.generate_keypair()
    _, s_public = keys.generate_keypair()
    forged = replace(roster, c_public={**roster.c_public, whose: c_public}, s_public={**roster.s_public, whose: s_public})
    expected = SIGNATURE_INVALID
    assert_refused(session.phase("share_keys", forged), expected)
    refused_in_audit(victim, expected)


def test_keys_signed_with_the_attackers_key_are_refused(victim: VictimSilo, plan: Plan, computations: FederatedComputations) -> None:
    session = Session.start(victim, plan, computations)
    session.offer()
    mallory = SecAggClient(HONEST_1, session.params, sign=signing_key("mallory").sign)
    roster = build_roster(session.params.session_id, [*(a for s, a in session.ads.items() if s != HONEST_1), mallory.advertise_keys()])
    assert_refused(session.phase("share_keys", roster), SIGNATURE_INVALID)
    refused_in_audit(victim, SIGNATURE_INVALID)


# -- equivocation ----------------------------------------------------------------------------
def test_second_survivor_split_is_equivocation(victim: VictimSilo, plan: Plan, computations: FederatedComputations) -> None:
    session = masked_session(victim, plan, computations)
    assert isinstance(session.consistency(), SecAggReply)
    survivors, dropped = session.split()
    other = UnmaskRequest(session.params.session_id, tuple(s for s in survivors if s != HONEST_2), (*dropped, HONEST_2))
    assert_refused(session.phase("consistency", other), EQUIVOCATION)
    refused_in_audit(victim, EQUIVOCATION)


def test_unmask_without_t_consistency_signatures_is_refused(
    victim: VictimSilo, plan: Plan, computations: FederatedComputations
) -> None:
    """Split A to the victim, split B to the honest silos: the attacker holds valid signatures
    over A from the victim and its colluder only (2 < t), and the victim reveals nothing."""
    session = masked_session(victim, plan, computations)
    sid = session.params.session_id
    survivors, _ = session.split()
    split_a = (survivors, ())
    victim_sig = session.phase("consistency", UnmaskRequest(sid, *split_a))
    assert isinstance(victim_sig, SecAggReply)
    split_b = (tuple(s for s in survivors if s != VICTIM), (VICTIM,))
    honest_sigs = {s: session.peers[s].client.sign_consistency(UnmaskRequest(sid, *split_b)).signature for s in (HONEST_1, HONEST_2)}
    signatures = {VICTIM: victim_sig.payload.signature, **sign_split([session.peers[COLLUDER]], sid, *split_a), **honest_sigs}
    assert_refused(session.phase("unmask", UnmaskRequest(sid, *split_a, signatures)), CONSISTENCY_FAILED)
    refused_in_audit(victim, CONSISTENCY_FAILED)


def test_unmask_request_other_than_the_signed_one_is_refused(
    victim: VictimSilo, plan: Plan, computations: FederatedComputations
) -> None:
    session = masked_session(victim, plan, computations)
    assert isinstance(session.consistency(), SecAggReply)
    survivors, dropped = session.split()
    other = (tuple(s for s in survivors if s != HONEST_2), (*dropped, HONEST_2))
    sigs = sign_split(session.peers.values(), session.params.session_id, *other)
    answer = session.phase("unmask", UnmaskRequest(session.params.session_id, *other, sigs))
    assert_refused(answer, EQUIVOCATION)
    refused_in_audit(victim, EQUIVOCATION)


def test_a_phase_asked_twice_differently_is_equivocation(
    victim: VictimSilo, plan: Plan, computations: FederatedComputations
) -> None:
    session = Session.start(victim, plan, computations)
    session.offer()
    first = session.share_keys()
    assert isinstance(first, SecAggReply)
    again = session.phase("share_keys", session.roster)  # an identical retry is answered identically
    assert isinstance(again, SecAggReply) and codec.encode(again.payload) == codec.encode(first.payload)
    assert session.roster is not None
    fewer = build_roster(session.params.session_id, [a for s, a in session.ads.items() if s != HONEST_2])
    assert_refused(session.phase("share_keys", fewer), EQUIVOCATION)
    refused_in_audit(victim, EQUIVOCATION)


# -- a different model per silo --------------------------------------------------------------
def test_a_different_model_for_the_victim_gives_no_sum(
    victim: VictimSilo, plan: Plan, computations: FederatedComputations
) -> None:
    """Pasquini et al. 2022: the victim alone gets a crafted model. Its session id binds the
    model digest, so the colluders' advertisements (signed for the others' session) do not
    verify for it, and a roster relabelled with its session fails their signatures."""
    common = Session.start(victim, plan, computations, round_number=2, peers=[HONEST_1, HONEST_2, COLLUDER])
    crafted = tuple(np.asarray(a) + (np.float32(0.5) if np.asarray(a).dtype == np.float32 else 0) for a in common.client_input)
    # (a) the victim is told the common session, but got the crafted model
    answer = victim.ask(common.train_task(client_input=crafted))
    assert_refused(answer, SESSION_MISMATCH)
    # (b) the victim is offered a session consistent with its own model
    own = Session.start(victim, plan, computations, round_number=2, client_input=crafted, peers=[])
    assert own.params.session_id != common.params.session_id
    assert isinstance(own.offer(), TrainResult)
    for peer in common.peers.values():
        common.ads[peer.silo_id] = peer.client.advertise_keys()
    foreign = build_roster(common.params.session_id, [own.ads[VICTIM], *common.ads.values()])
    assert_refused(own.phase("share_keys", replace(foreign, session_id=own.params.session_id)), SIGNATURE_INVALID)
    refused_in_audit(victim, SIGNATURE_INVALID)


# -- sender spoofing -------------------------------------------------------------------------
def test_inbox_addressed_to_another_silo_is_refused(victim: VictimSilo, plan: Plan, computations: FederatedComputations) -> None:
    session = Session.start(victim, plan, computations)
    session.offer()
    session.share_keys()
    inbox = route_shares(session.params.session_id, session.bundles, VICTIM)
    assert_refused(session.phase("masked_input", replace(inbox, recipient=HONEST_1)), VIOLATION)
    refused_in_audit(victim, VIOLATION)


def test_share_relabelled_with_another_sender_is_refused(victim: VictimSilo, plan: Plan, computations: FederatedComputations) -> None:
    session = Session.start(victim, plan, computations)
    session.offer()
    session.share_keys()
    inbox = route_shares(session.params.session_id, session.bundles, VICTIM)
    swapped = {**inbox.ciphertexts, HONEST_1: inbox.ciphertexts[HONEST_2], HONEST_2: inbox.ciphertexts[HONEST_1]}
    assert_refused(session.phase("masked_input", replace(inbox, ciphertexts=swapped)), SIGNATURE_INVALID)
    refused_in_audit(victim, SIGNATURE_INVALID)
    assert VICTIM not in session.masked


def test_roster_entry_naming_another_sender_is_refused(victim: VictimSilo, plan: Plan, computations: FederatedComputations) -> None:
    """HONEST_1's slot carries HONEST_2's (validly signed) advertisement."""
    session = Session.start(victim, plan, computations)
    session.offer()
    roster = build_roster(session.params.session_id, session.ads.values())
    ad = session.ads[HONEST_2]
    _, c_public = keys.generate_keypair()
    _, s_public = keys.generate_keypair()
    forged = replace(
        roster,
        c_public={**roster.c_public, HONEST_1: ad.c_public, HONEST_2: c_public},
        s_public={**roster.s_public, HONEST_1: ad.s_public, HONEST_2: s_public},
        nonces={**roster.nonces, HONEST_1: ad.nonce}, commitments={**roster.commitments, HONEST_1: ad.commitment},
        signatures={**roster.signatures, HONEST_1: ad.signature},
    )
    assert_refused(session.phase("share_keys", forged), SIGNATURE_INVALID)
    refused_in_audit(victim, SIGNATURE_INVALID)


# -- out-of-range rounds and attempts (DP plan: nothing may be charged) -----------------------
@pytest.mark.parametrize(
    "round_number,attempt,code",
    [(4, 1, ROUND_OUT_OF_RANGE), (0, 1, ROUND_OUT_OF_RANGE), (-1, 1, ROUND_OUT_OF_RANGE),
     (1, 4, ATTEMPT_OUT_OF_RANGE), (1, 0, ATTEMPT_OUT_OF_RANGE)],
)
def test_out_of_range_round_or_attempt_is_refused_uncharged(
    fresh_victim: VictimSilo, plan: Plan, computations: FederatedComputations, round_number: int, attempt: int, code: str
) -> None:
    victim = fresh_victim
    session = Session.start(victim, plan, computations, round_number=round_number, attempt=attempt)
    assert_refused(session.offer(), code)
    refused_in_audit(victim, code)
    assert victim.ledger_charges(plan) == []
    assert victim.services.released.get(plan.plan_hash, round_number) is None


# -- oversized and malformed messages ---------------------------------------------------------
@pytest.mark.parametrize(
    "garbage", [b"not a message", b"HFED" + PROTOCOL_VERSION.to_bytes(2, "big") + b"\xff\xff\xff\xff"],
    ids=["text", "header-too-long"],
)
def test_garbage_instead_of_a_task_does_not_stop_the_silo(
    victim: VictimSilo, plan: Plan, computations: FederatedComputations, garbage: bytes
) -> None:
    victim.aggregator.script(garbage)
    victim.settle()
    # still answers the next honest task
    answer = Session.start(victim, plan, computations).offer()
    assert isinstance(answer, TrainResult)


@pytest.mark.parametrize("phase,payload_kind,code", [
    ("share_keys", "inbox", "SECAGG_PHASE_PAYLOAD_INVALID"), ("masked_input", "roster", "SECAGG_PHASE_PAYLOAD_INVALID"),
    ("consistency", "roster", "SECAGG_PHASE_PAYLOAD_INVALID"), ("unmask", "share", "SECAGG_PHASE_PAYLOAD_INVALID"),
    ("no_such_phase", "roster", "SECAGG_UNKNOWN_PHASE"),
])
def test_wrong_payload_for_a_phase_is_a_coded_refusal(
    victim: VictimSilo, plan: Plan, computations: FederatedComputations, phase: str, payload_kind: str, code: str
) -> None:
    session = Session.start(victim, plan, computations)
    session.offer()
    roster = build_roster(session.params.session_id, session.ads.values())
    payload = {
        "inbox": ShareInbox(session.params.session_id, VICTIM, (VICTIM,), {}),
        "roster": roster,
        "share": EncryptedShare(session.params.session_id, COLLUDER, VICTIM, b"\x00" * 64),
    }[payload_kind]
    assert_refused(session.phase(phase, payload), code)
    refused_in_audit(victim, code)


@pytest.mark.parametrize("session_for", ["announced_model", "malformed_model"])
def test_malformed_model_input_is_a_coded_refusal(
    victim: VictimSilo, plan: Plan, computations: FederatedComputations, session_for: str
) -> None:
    """Wrong-shaped weights, offered with the session of the real model (mismatch) or with a
    session the attacker derived for the malformed input itself (the silo gets to training)."""
    session = Session.start(victim, plan, computations, round_number=2)
    bad = tuple(np.zeros((3, 3), dtype=np.float32) for _ in session.client_input)
    offer = session_offer(session.params if session_for == "announced_model" else derive_session(plan, computations, 2, 1, bad))
    answer = victim.ask(session.train_task(client_input=bad, secagg=offer))
    assert isinstance(answer, Refusal)
    charged = [c.round for c in victim.ledger_charges(plan)]
    assert answer.code != "SILO_INTERNAL_ERROR", f"malformed weights crashed the task: {answer.message}; charged rounds {charged}"
    assert_refused(answer, answer.code)
    # the state's shapes are checked against the silo's own computation before anything else
    assert answer.code == "MODEL_INPUT_INVALID"
    assert charged == [1], "checked before the ledger is charged: only the template's round 1"


def test_oversized_roster_is_refused(victim: VictimSilo, plan: Plan, computations: FederatedComputations) -> None:
    session = Session.start(victim, plan, computations)
    session.offer()
    roster = build_roster(session.params.session_id, session.ads.values())
    names = tuple(f"s{i:05d}" for i in range(2_000))
    blob = b"\x01" * 32
    huge = KeyRoster(roster.session_id, (*roster.silos, *names), {**roster.c_public, **{n: blob for n in names}},
                     {**roster.s_public, **{n: blob for n in names}}, {**roster.nonces, **{n: blob for n in names}},
                     {**roster.commitments, **{n: blob for n in names}}, {**roster.signatures, **{n: b"" for n in names}})
    assert_refused(session.phase("share_keys", huge), VIOLATION)
    refused_in_audit(victim, VIOLATION)


# -- SecAgg+: the aggregator cannot choose the neighbour graph ---------------------------------
PLUS_COHORT = (COLLUDER, HONEST_1, HONEST_2, "honest-3", "honest-4", "honest-5", VICTIM)


@pytest.fixture(scope="module")
def plus_plan() -> Plan:
    # degree 4 of 6 is safe only when nobody drops and at most one silo colludes (graph_parameters)
    return adversary_plan(PLUS_COHORT, protocol="secagg_plus", neighbours=4, threshold=7, colluding_silos=1)


@pytest.fixture(scope="module")
def plus_computations(plus_plan: Plan) -> FederatedComputations:
    return traced_computations(plus_plan)


def test_secagg_plus_graph_comes_from_the_signed_nonces(
    victim: VictimSilo, plus_plan: Plan, plus_computations: FederatedComputations
) -> None:
    session = Session.start(victim, plus_plan, plus_computations)
    session.offer()
    answer = session.share_keys()
    assert isinstance(answer, SecAggReply)
    assert session.roster is not None
    params = session.params
    neighbours = params.graph_for(graph_seed(params.session_id, session.roster.nonces))[VICTIM]
    assert params.degree < params.n - 1  # a real SecAgg+ graph, not the complete one
    # the victim shared its secrets exactly with the neighbours the signed nonces define
    assert {s.recipient for s in answer.payload.shares} == set(neighbours)

    # Grinding: the attacker re-rolls one colluder nonce until the victim's neighbourhood
    # changes (it would look for one full of colluders); the re-signed advertisement is fine
    # for a colluder, so the defence is that every silo derives the graph from what it verified.
    colluder = session.peers[COLLUDER]
    for _ in range(64):
        nonce = os.urandom(32)
        if params.graph_for(graph_seed(params.session_id, {**session.roster.nonces, COLLUDER: nonce}))[VICTIM] != neighbours:
            break
    else:
        pytest.fail("no nonce changed the victim's neighbourhood: the graph would not depend on the nonces")
    # an honest silo's nonce swapped without its key: the signature no longer verifies
    fresh = Session.start(victim, plus_plan, plus_computations, attempt=2)  # re-sends the stored update
    fresh.offer()
    roster = build_roster(fresh.params.session_id, fresh.ads.values())
    ground = replace(roster, nonces={**roster.nonces, HONEST_1: nonce})
    assert_refused(fresh.phase("share_keys", ground), SIGNATURE_INVALID)
    refused_in_audit(victim, SIGNATURE_INVALID)
    assert colluder.silo_id in roster.silos
