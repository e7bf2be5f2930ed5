"""The aggregator's side of secure aggregation: one `SecAggServer` per session.

The aggregator relays what it cannot read, keeps one running sum per vector (memory O(d), not
O(n*d): masked inputs are added as they arrive and not kept), and at the end reconstructs
exactly the secrets the surviving silos agreed to reveal -- self-mask seeds of survivors, masking
keys of silos that dropped after sharing keys -- to strip the masks from the sum. Between masked
input and unmasking runs the consistency round: survivors sign the survivor/dropped split, and
the unmask request carries at least t of those signatures (silos refuse it otherwise). Each phase
accepts messages from the silos that answered; the caller decides when a deadline has passed
and calls the next phase method, and silos that missed a phase are treated as dropped.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from healthfed_common.secagg import keys, prg, shamir
from healthfed_common.secagg.graph import graph_seed
from healthfed_common.secagg.errors import (
    AuthenticationFailed,
    CommitmentMismatch,
    PhaseOrderError,
    ProtocolViolation,
    TooFewSurvivors,
)
from healthfed_common.secagg.messages import (
    ConsistencySignature,
    EncryptedShare,
    KeyAdvertisement,
    KeyRoster,
    MaskedInput,
    ShareInbox,
    UnmaskRequest,
    UnmaskResponse,
)
from healthfed_common.secagg.messages import U64Array
from healthfed_common.secagg.params import SessionParams
from healthfed_common.secagg.vectors import check_vectors

Verifier = Callable[[str, bytes, bytes], bool]

_ADVERTISE, _SHARE, _MASKED, _CONSISTENCY, _UNMASK, _DONE, _ABORTED = range(7)
_PHASE_NAMES = ("key advertisement", "share distribution", "masked input", "consistency check", "unmasking",
                "finished", "aborted")


class SecAggServer:
    """Aggregator state for one session; see the module docstring for the phase model."""

    def __init__(self, params: SessionParams, *, verify: Verifier | None = None) -> None:
        self.params = params
        self._verify = verify
        self._phase = _ADVERTISE
        self._abort_reason = ""
        self._ads: dict[str, KeyAdvertisement] = {}
        self._roster: KeyRoster | None = None
        self._shares: dict[str, dict[str, bytes]] = {}
        self._share_senders: tuple[str, ...] = ()
        self._masked_from: list[str] = []
        self._sums: list[U64Array] | None = None
        self._request: UnmaskRequest | None = None
        self._graph: dict[str, frozenset[str]] = {}
        self._consistency: dict[str, bytes] = {}
        self._responses: dict[str, UnmaskResponse] = {}
        self._result: list[U64Array] | None = None
        self.counted: tuple[str, ...] = ()

    @property
    def masked_from(self) -> tuple[str, ...]:
        """The silos whose masked input arrived (public: who took part)."""
        return tuple(self._masked_from)

    @property
    def graph(self) -> dict[str, frozenset[str]]:
        """The neighbour sets of this session (known once the roster closed; public)."""
        return dict(self._graph)

    # -- helpers ---------------------------------------------------------------------------
    def _ordered(self, silos: set[str] | frozenset[str]) -> tuple[str, ...]:
        return tuple(s for s in self.params.participants if s in silos)

    def _accepting(self, phase: int, what: str, session_id: bytes, sender: str) -> None:
        """Common checks for an incoming message: right session, known sender, open phase."""
        if session_id != self.params.session_id:
            raise ProtocolViolation(f"{what} from {sender!r} belongs to another session (replay or cross-round)")
        if sender not in self.params.index:
            raise ProtocolViolation(f"{what} from unknown silo {sender!r}")
        if self._phase == _ABORTED:
            raise TooFewSurvivors(self._abort_reason)
        if self._phase != phase:
            raise ProtocolViolation(
                f"{what} from {sender!r} arrived during {_PHASE_NAMES[self._phase]}: that phase is closed"
            )

    def _abort(self, reason: str) -> TooFewSurvivors:
        """Forget everything derived from the silos' inputs and return the error to raise."""
        self._phase = _ABORTED
        self._abort_reason = reason
        self._sums = None
        self._shares.clear()
        self._responses.clear()
        return TooFewSurvivors(reason)

    def _close(self, phase: int, method: str) -> bool:
        """True when `method` closes `phase` now; False when it was closed before (idempotent
        re-read); raises if called too early or after an abort."""
        if self._phase == _ABORTED:
            raise TooFewSurvivors(self._abort_reason)
        if self._phase < phase:
            raise PhaseOrderError(f"{method} called during {_PHASE_NAMES[self._phase]}")
        return self._phase == phase

    # -- phase 1 ---------------------------------------------------------------------------
    def receive_advertisement(self, adv: KeyAdvertisement) -> None:
        """Accept one silo's public keys (checked against its signature when configured)."""
        self._accepting(_ADVERTISE, "key advertisement", adv.session_id, adv.sender)
        if adv.sender in self._ads:
            raise ProtocolViolation(f"duplicate key advertisement from {adv.sender!r}")
        if len(adv.c_public) != keys.PUBLIC_KEY_BYTES or len(adv.s_public) != keys.PUBLIC_KEY_BYTES:
            raise ProtocolViolation(f"key advertisement from {adv.sender!r} has malformed keys")
        if adv.c_public == adv.s_public:
            raise ProtocolViolation(f"key advertisement from {adv.sender!r} reuses one key for both roles")
        if len(adv.nonce) != keys.GRAPH_NONCE_BYTES or len(adv.commitment) != keys.COMMITMENT_BYTES:
            raise ProtocolViolation(f"key advertisement from {adv.sender!r} has a malformed nonce or commitment")
        if self._verify is not None:
            payload = keys.advertisement_payload(
                adv.session_id, adv.sender, adv.c_public, adv.s_public, adv.nonce, adv.commitment
            )
            if not self._verify(adv.sender, payload, adv.signature):
                raise AuthenticationFailed(f"key advertisement of {adv.sender!r} has an invalid signature")
        self._ads[adv.sender] = adv

    def roster(self) -> KeyRoster:
        """Close key advertisement (first call) and return the roster every silo receives."""
        if self._close(_ADVERTISE, "roster"):
            p = self.params
            if len(self._ads) < p.threshold:
                raise self._abort(f"only {len(self._ads)} silos advertised keys, threshold is {p.threshold}")
            silos = self._ordered(frozenset(self._ads))
            self._roster = KeyRoster(
                p.session_id,
                silos,
                {s: self._ads[s].c_public for s in silos},
                {s: self._ads[s].s_public for s in silos},
                {s: self._ads[s].nonce for s in silos},
                {s: self._ads[s].commitment for s in silos},
                {s: self._ads[s].signature for s in silos},
            )
            self._graph = dict(p.graph_for(graph_seed(p.session_id, self._roster.nonces)))
            self._phase = _SHARE
        assert self._roster is not None
        return self._roster

    # -- phase 2 ---------------------------------------------------------------------------
    def receive_shares(self, sender: str, shares: Sequence[EncryptedShare]) -> None:
        """Accept one silo's encrypted shares: exactly one for each neighbour in the roster."""
        self._accepting(_SHARE, "shares", self.params.session_id, sender)
        assert self._roster is not None
        if sender not in self._roster.c_public:
            raise ProtocolViolation(f"shares from {sender!r}, which is not in the roster")
        if sender in self._shares:
            raise ProtocolViolation(f"duplicate shares from {sender!r}")
        neighbours = self._graph[sender]
        expected = {v for v in self._roster.silos if v in neighbours}
        by_recipient: dict[str, bytes] = {}
        for share in shares:
            if not isinstance(share, EncryptedShare):
                raise ProtocolViolation(f"shares from {sender!r} contain a non-share message")
            if share.session_id != self.params.session_id:
                raise ProtocolViolation(f"share from {sender!r} belongs to another session (replay or cross-round)")
            if share.sender != sender:
                raise ProtocolViolation(f"{sender!r} relayed a share claiming to be from {share.sender!r}")
            if share.recipient not in expected:
                raise ProtocolViolation(f"share from {sender!r} for unknown or non-neighbour peer {share.recipient!r}")
            if share.recipient in by_recipient:
                raise ProtocolViolation(f"two shares from {sender!r} for {share.recipient!r}")
            by_recipient[share.recipient] = share.ciphertext
        missing = expected - set(by_recipient)
        if missing:
            raise ProtocolViolation(f"{sender!r} sent no share for {sorted(missing)}")
        self._shares[sender] = by_recipient

    def inbox_for(self, silo_id: str) -> ShareInbox:
        """Close share distribution (first call) and return the shares addressed to a silo."""
        if self._close(_SHARE, "inbox_for"):
            if len(self._shares) < self.params.threshold:
                raise self._abort(
                    f"only {len(self._shares)} silos shared keys, threshold is {self.params.threshold}"
                )
            self._share_senders = self._ordered(frozenset(self._shares))
            self._phase = _MASKED
        if silo_id not in self._share_senders:
            raise ProtocolViolation(f"{silo_id!r} did not share keys in time and is dropped from this session")
        ciphertexts = {v: self._shares[v][silo_id] for v in self._share_senders if silo_id in self._shares[v]}
        return ShareInbox(self.params.session_id, silo_id, self._share_senders, ciphertexts)

    # -- phase 3 ---------------------------------------------------------------------------
    def receive_masked_input(self, masked: MaskedInput) -> None:
        """Check one masked input and add it to the running sums (it is not kept)."""
        self._accepting(_MASKED, "masked input", masked.session_id, masked.sender)
        if masked.sender not in self._share_senders:
            raise ProtocolViolation(f"masked input from {masked.sender!r}, which did not share keys")
        if masked.sender in self._masked_from:
            raise ProtocolViolation(f"duplicate masked input from {masked.sender!r}")
        vectors = check_vectors(self.params, masked.vectors, ProtocolViolation, masked.sender)
        if self._sums is None:
            self._sums = [np.zeros(d, dtype=np.uint64) for d in self.params.vector_lengths]
        for acc, vector in zip(self._sums, vectors):
            np.add(acc, vector, out=acc)
        self._masked_from.append(masked.sender)

    # -- phase 4: consistency check ---------------------------------------------------------
    def unmask_request(self) -> UnmaskRequest:
        """Close masked input (first call) and name survivors and dropped silos; each survivor
        signs this split in the consistency round (the request carries no signatures yet)."""
        if self._close(_MASKED, "unmask_request"):
            survivors = self._ordered(frozenset(self._masked_from))
            if len(survivors) < self.params.threshold:
                raise self._abort(
                    f"only {len(survivors)} masked inputs arrived, threshold is {self.params.threshold}"
                )
            dropped = tuple(s for s in self._share_senders if s not in survivors)
            self._request = UnmaskRequest(self.params.session_id, survivors, dropped)
            self._phase = _CONSISTENCY
        assert self._request is not None
        return UnmaskRequest(self._request.session_id, self._request.survivors, self._request.dropped)

    def receive_consistency_signature(self, signed: ConsistencySignature) -> None:
        """Accept one survivor's signature over the split (verified when keys are configured)."""
        self._accepting(_CONSISTENCY, "consistency signature", signed.session_id, signed.sender)
        assert self._request is not None
        if signed.sender not in self._request.survivors:
            raise ProtocolViolation(f"consistency signature from {signed.sender!r}, which is not a survivor")
        if signed.sender in self._consistency:
            raise ProtocolViolation(f"duplicate consistency signature from {signed.sender!r}")
        if self._verify is not None:
            payload = keys.consistency_payload(self.params.session_id, self._request.survivors, self._request.dropped)
            if not self._verify(signed.sender, payload, signed.signature):
                raise AuthenticationFailed(f"consistency signature of {signed.sender!r} does not verify")
        self._consistency[signed.sender] = signed.signature

    def signed_unmask_request(self) -> UnmaskRequest:
        """Close the consistency round (first call): the unmask request with the t or more
        signatures every survivor checks before revealing anything."""
        if self._close(_CONSISTENCY, "signed_unmask_request"):
            if len(self._consistency) < self.params.threshold:
                raise self._abort(
                    f"only {len(self._consistency)} silos signed the survivor set, threshold is {self.params.threshold}"
                )
            assert self._request is not None
            self._request = UnmaskRequest(
                self.params.session_id, self._request.survivors, self._request.dropped, dict(self._consistency)
            )
            self._phase = _UNMASK
        assert self._request is not None
        return self._request

    # -- phase 5 ---------------------------------------------------------------------------
    def receive_unmask_response(self, resp: UnmaskResponse) -> None:
        """Accept one survivor's shares: exactly those it holds for the request's silos."""
        self._accepting(_UNMASK, "unmask response", resp.session_id, resp.sender)
        assert self._request is not None
        if resp.sender not in self._request.survivors:
            raise ProtocolViolation(f"unmask response from {resp.sender!r}, which is not a survivor")
        if resp.sender in self._responses:
            raise ProtocolViolation(f"duplicate unmask response from {resp.sender!r}")
        held = self._graph[resp.sender] | {resp.sender}
        want_self = {v for v in self._request.survivors if v in held}
        want_key = {v for v in self._request.dropped if v in held}
        if set(resp.self_mask_shares) != want_self or set(resp.key_shares) != want_key:
            raise ProtocolViolation(f"unmask response from {resp.sender!r} does not match the request")
        for share in (*resp.self_mask_shares.values(), *resp.key_shares.values()):
            if len(share) != shamir.SHARE_BYTES:
                raise ProtocolViolation(f"unmask response from {resp.sender!r} has a malformed share")
        self._responses[resp.sender] = resp

    def finish(self) -> list[U64Array]:
        """Close unmasking and return the exact sum mod 2^b of the survivors' inputs.
        All secrets are reconstructed before any mask is removed, so an abort here leaves
        nothing half-unmasked."""
        if not self._close(_UNMASK, "finish"):
            assert self._result is not None
            return [r.copy() for r in self._result]
        p = self.params
        assert self._request is not None and self._roster is not None and self._sums is not None
        if len(self._responses) < p.threshold:
            raise self._abort(f"only {len(self._responses)} silos answered unmasking, threshold is {p.threshold}")
        self_seeds = {v: self._reconstruct(v, "self_mask_shares") for v in self._request.survivors}
        for v, seed in self_seeds.items():
            if keys.self_mask_commitment(p.session_id, v, seed) != self._roster.commitments[v]:
                self._phase = _ABORTED
                self._abort_reason = f"reconstructed self-mask seed of {v!r} does not open its commitment"
                self._sums = None
                raise CommitmentMismatch(self._abort_reason)
        dropped_keys = {v: self._reconstruct(v, "key_shares") for v in self._request.dropped}
        for v, private in dropped_keys.items():
            if keys.public_from_private(private) != self._roster.s_public[v]:
                raise ProtocolViolation(f"reconstructed masking key of {v!r} does not match its advertisement")
        survivors = set(self._request.survivors)
        pair_removals = []
        for v, private in dropped_keys.items():
            for u in self._request.survivors:
                if u in self._graph[v]:
                    key = keys.mask_key(private, self._roster.s_public[u], p.session_id, u, v)
                    sign_at_u = 1 if u < v else -1
                    pair_removals.append((key, -sign_at_u))
        assert survivors
        for j, acc in enumerate(self._sums):
            for seed in self_seeds.values():
                prg.apply_mask(acc, seed, j, -1)
            for key, sign in pair_removals:
                prg.apply_mask(acc, key, j, sign)
            np.bitwise_and(acc, np.uint64(p.modulus_mask(j)), out=acc)
        self._result = self._sums
        self._sums = None
        self.counted = self._request.survivors
        self._phase = _DONE
        return [r.copy() for r in self._result]

    def _reconstruct(self, silo: str, field: str) -> bytes:
        shares = {
            self.params.index[h]: getattr(r, field)[silo]
            for h, r in self._responses.items()
            if silo in getattr(r, field)
        }
        t = self.params.share_threshold
        if len(shares) < t:
            kind = "self-mask seed" if field == "self_mask_shares" else "masking key"
            raise self._abort(f"only {len(shares)} shares of the {kind} of {silo!r} arrived, need {t}")
        return shamir.combine(shares, t)
