"""The silo's side of secure aggregation: one `SecAggClient` per silo per session.

The client is where the privacy guarantees are enforced, because the aggregator is the
party they protect against (Bonawitz et al. 2017, active-security variant). It refuses: a
roster that replaces its own keys or carries any advertisement whose signature does not verify
under the peer's pinned key; fewer than t peers at any phase; a second masked input under the
same masks (the difference of two masked inputs is the difference of the inputs); a second,
different survivor split in the consistency round; and any unmasking request that is not the
split it signed, lacks t valid consistency signatures over it, asks for both the self-mask
share and the key share of one peer, names fewer than t survivors, or claims this silo dropped.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

import numpy as np

from healthfed_common.secagg import keys, prg, shamir
from healthfed_common.secagg.graph import graph_seed
from healthfed_common.secagg.errors import (
    AuthenticationFailed,
    ConsistencyFailed,
    Equivocation,
    InvalidInput,
    PhaseOrderError,
    ProtocolViolation,
    ShareRequestRefused,
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

Signer = Callable[[bytes], bytes]
Verifier = Callable[[str, bytes, bytes], bool]

_SELF_MASK, _KEY = "self-mask", "key"


class SecAggClient:
    """One silo in one secure-aggregation session. Methods must be called in protocol order:
    advertise_keys -> share_keys -> masked_input -> sign_consistency -> unmask (unmask may be
    repeated for the same request; it never reveals a second kind of share for any peer).

    `sign` signs with this silo's pinned long-term key; `verify(silo, payload, signature)`
    checks a peer's signature under that peer's pinned key. Production always passes both;
    without them the session is secure only against an aggregator that follows the protocol."""

    def __init__(
        self,
        silo_id: str,
        params: SessionParams,
        *,
        sign: Signer | None = None,
        verify: Verifier | None = None,
    ) -> None:
        if silo_id not in params.index:
            raise ProtocolViolation(f"{silo_id!r} is not a participant of this session")
        self.silo_id = silo_id
        self.params = params
        self._sign = sign
        self._verify = verify
        self._neighbours: frozenset[str] = frozenset()
        self._c_private, self._c_public = keys.generate_keypair()
        self._s_private, self._s_public = keys.generate_keypair()
        self._self_seed = os.urandom(prg.KEY_BYTES)
        self._nonce = os.urandom(keys.GRAPH_NONCE_BYTES)
        self._commitment = keys.self_mask_commitment(params.session_id, silo_id, self._self_seed)
        self._signed_split: tuple[tuple[str, ...], tuple[str, ...]] | None = None
        self._phase = "new"
        self._roster: KeyRoster | None = None
        self._share_senders: frozenset[str] = frozenset()
        self._held_self_mask: dict[str, bytes] = {}
        self._held_key: dict[str, bytes] = {}
        self._revealed: dict[str, str] = {}

    # -- phase 1 ---------------------------------------------------------------------------
    def advertise_keys(self) -> KeyAdvertisement:
        """Publish this round's two public keys, signed with the long-term key if configured."""
        self._advance("new", "advertised")
        payload = keys.advertisement_payload(
            self.params.session_id, self.silo_id, self._c_public, self._s_public, self._nonce, self._commitment
        )
        signature = self._sign(payload) if self._sign is not None else b""
        return KeyAdvertisement(
            self.params.session_id, self.silo_id, self._c_public, self._s_public, self._nonce,
            self._commitment, signature,
        )

    # -- phase 2 ---------------------------------------------------------------------------
    def share_keys(self, roster: KeyRoster) -> tuple[EncryptedShare, ...]:
        """Check the roster, then t-of-m Shamir-share the self-mask seed and the masking key
        among this silo and its neighbours in the roster, each share encrypted to its holder."""
        self._advance("advertised", "shared")
        self._check_roster(roster)
        self._roster = roster
        graph = self.params.graph_for(graph_seed(self.params.session_id, roster.nonces))
        self._neighbours = graph[self.silo_id]
        holders = [v for v in roster.silos if v in self._neighbours or v == self.silo_id]
        xs = [self.params.index[v] for v in holders]
        t = self.params.share_threshold
        if len(holders) < t:
            raise TooFewSurvivors(
                f"{self.silo_id}: only {len(holders)} share holders in the roster, need {t}"
            )
        self_mask_shares = shamir.split(self._self_seed, xs, t)
        key_shares = shamir.split(self._s_private, xs, t)
        out = []
        for v, x in zip(holders, xs):
            if v == self.silo_id:
                self._held_self_mask[v] = self_mask_shares[x]
                self._held_key[v] = key_shares[x]
                continue
            key = keys.transport_key(
                self._c_private, roster.c_public[v], self.params.session_id, self.silo_id, v
            )
            aad = keys.share_aad(self.params.session_id, self.silo_id, v)
            ciphertext = keys.seal(key, aad, self_mask_shares[x] + key_shares[x])
            out.append(EncryptedShare(self.params.session_id, self.silo_id, v, ciphertext))
        return tuple(out)

    def _check_roster(self, roster: KeyRoster) -> None:
        p = self.params
        if roster.session_id != p.session_id:
            raise ProtocolViolation("roster belongs to another session")
        silos = roster.silos
        if len(set(silos)) != len(silos):
            raise ProtocolViolation("roster lists a silo twice")
        unknown = [s for s in silos if s not in p.index]
        if unknown:
            raise ProtocolViolation(f"roster names unknown silos: {sorted(unknown)}")
        tables = (roster.c_public, roster.s_public, roster.nonces, roster.commitments)
        if not all(set(table) == set(silos) for table in tables):
            raise ProtocolViolation("roster key tables do not match its silo list")
        if self.silo_id not in silos:
            raise ProtocolViolation(f"roster omits {self.silo_id} itself")
        own = (roster.c_public[self.silo_id], roster.s_public[self.silo_id],
               roster.nonces[self.silo_id], roster.commitments[self.silo_id])
        if own != (self._c_public, self._s_public, self._nonce, self._commitment):
            raise AuthenticationFailed("roster replaces this silo's own advertisement")
        all_keys = [roster.c_public[s] for s in silos] + [roster.s_public[s] for s in silos]
        if len(set(all_keys)) != len(all_keys):
            raise ProtocolViolation("roster repeats a public key")
        if self._verify is not None:
            for s in silos:
                payload = keys.advertisement_payload(
                    p.session_id, s, roster.c_public[s], roster.s_public[s], roster.nonces[s],
                    roster.commitments[s],
                )
                if not self._verify(s, payload, roster.signatures.get(s, b"")):
                    raise AuthenticationFailed(f"key advertisement of {s} has an invalid signature")
        if len(silos) < p.threshold:
            raise TooFewSurvivors(
                f"only {len(silos)} silos advertised keys, threshold is {p.threshold}"
            )

    # -- phase 3 ---------------------------------------------------------------------------
    def masked_input(self, inbox: ShareInbox, vectors: Sequence[U64Array]) -> MaskedInput:
        """Store the shares received, then mask each vector with the self mask and with one
        pairwise mask per neighbour that shared keys (sign by id order), reduced mod 2^b.
        Allowed once: a second masked input under the same masks would reveal the difference."""
        p = self.params
        vectors = check_vectors(p, vectors, InvalidInput, self.silo_id)
        self._advance("shared", "masked")
        peers = self._open_inbox(inbox)
        assert self._roster is not None
        pair_keys = [
            (
                keys.mask_key(self._s_private, self._roster.s_public[v], p.session_id, self.silo_id, v),
                1 if self.silo_id < v else -1,
            )
            for v in peers
        ]
        out = []
        for j, x in enumerate(vectors):
            y = np.array(x, dtype=np.uint64, copy=True, order="C")
            prg.apply_mask(y, self._self_seed, j, 1)
            for key, sign in pair_keys:
                prg.apply_mask(y, key, j, sign)
            np.bitwise_and(y, np.uint64(p.modulus_mask(j)), out=y)
            out.append(y)
        return MaskedInput(p.session_id, self.silo_id, tuple(out))

    def _open_inbox(self, inbox: ShareInbox) -> list[str]:
        p = self.params
        assert self._roster is not None
        if inbox.session_id != p.session_id:
            raise ProtocolViolation("share inbox belongs to another session")
        if inbox.recipient != self.silo_id:
            raise ProtocolViolation(f"share inbox is addressed to {inbox.recipient!r}")
        senders = set(inbox.senders)
        if len(senders) != len(inbox.senders):
            raise ProtocolViolation("share inbox lists a sender twice")
        outside = senders - set(self._roster.silos)
        if outside:
            raise ProtocolViolation(f"shares from silos not in the roster: {sorted(outside)}")
        if self.silo_id not in senders:
            raise ProtocolViolation("share inbox says this silo's own shares did not arrive")
        if len(senders) < p.threshold:
            raise TooFewSurvivors(f"only {len(senders)} silos shared keys, threshold is {p.threshold}")
        expected = (senders & self._neighbours) - {self.silo_id}
        got = set(inbox.ciphertexts)
        if got != expected:
            extra, missing = sorted(got - expected), sorted(expected - got)
            raise ProtocolViolation(
                f"share inbox has shares from unexpected peers {extra} / lacks shares from {missing}"
            )
        for v in sorted(expected):
            key = keys.transport_key(
                self._c_private, self._roster.c_public[v], p.session_id, v, self.silo_id
            )
            plain = keys.open_sealed(key, keys.share_aad(p.session_id, v, self.silo_id), inbox.ciphertexts[v])
            if len(plain) != 2 * shamir.SHARE_BYTES:
                raise ProtocolViolation(f"share from {v} has the wrong length")
            self._held_self_mask[v] = plain[: shamir.SHARE_BYTES]
            self._held_key[v] = plain[shamir.SHARE_BYTES :]
        self._share_senders = frozenset(senders)
        return sorted(expected)

    # -- phase 4: consistency check (Bonawitz et al. 2017, §6) ------------------------------
    def sign_consistency(self, request: UnmaskRequest) -> ConsistencySignature:
        """Check the survivor/dropped split and sign it. A silo signs one split per session:
        the same split again gets the same answer, any other is equivocation."""
        if self._phase not in ("masked", "signed"):
            raise PhaseOrderError(f"{self.silo_id}: consistency check before masked_input")
        split = self._check_split(request)
        if self._signed_split is not None and split != self._signed_split:
            raise Equivocation("the aggregator asked this silo to sign a second, different survivor set")
        self._signed_split = split
        self._phase = "signed" if self._phase == "masked" else self._phase
        payload = keys.consistency_payload(self.params.session_id, *split)
        signature = self._sign(payload) if self._sign is not None else b""
        return ConsistencySignature(self.params.session_id, self.silo_id, signature)

    def _check_split(self, request: UnmaskRequest) -> tuple[tuple[str, ...], tuple[str, ...]]:
        p = self.params
        if request.session_id != p.session_id:
            raise ProtocolViolation("unmask request belongs to another session")
        survivors, dropped = set(request.survivors), set(request.dropped)
        if len(survivors) != len(request.survivors) or len(dropped) != len(request.dropped):
            raise ProtocolViolation("unmask request lists a silo twice")
        both = survivors & dropped
        if both:
            raise ShareRequestRefused(f"request asks for both shares of {sorted(both)}")
        if len(survivors) < p.threshold:
            raise ShareRequestRefused(
                f"request names {len(survivors)} survivors, threshold is {p.threshold}"
            )
        if self.silo_id not in survivors:
            raise ShareRequestRefused("request claims this silo dropped, but it sent its masked input")
        if survivors | dropped != self._share_senders:
            raise ProtocolViolation(
                "survivors and dropped must partition the silos that shared keys; "
                f"unknown {sorted((survivors | dropped) - self._share_senders)}, "
                f"missing {sorted(self._share_senders - survivors - dropped)}"
            )
        order = p.participants
        return tuple(s for s in order if s in survivors), tuple(s for s in order if s in dropped)

    # -- phase 5 ---------------------------------------------------------------------------
    def unmask(self, request: UnmaskRequest) -> UnmaskResponse:
        """Reveal self-mask shares of surviving peers and key shares of dropped peers -- only
        for the split this silo signed, and only once t survivors provably signed that same
        split (so no two honest silos can be shown different splits)."""
        if self._phase not in ("signed", "unmasked") or self._signed_split is None:
            raise PhaseOrderError(f"{self.silo_id}: unmask before the consistency check")
        p = self.params
        split = self._check_split(request)
        if split != self._signed_split:
            raise Equivocation("unmask request differs from the survivor set this silo signed")
        survivors_t, dropped_t = split
        if self._verify is not None:
            payload = keys.consistency_payload(p.session_id, survivors_t, dropped_t)
            valid = {
                s for s, signature in request.signatures.items()
                if s in survivors_t and self._verify(s, payload, signature)
            }
            if len(valid) < p.threshold:
                raise ConsistencyFailed(
                    f"unmask request carries {len(valid)} valid consistency signatures, threshold is {p.threshold}"
                )
        survivors, dropped = set(survivors_t), set(dropped_t)
        conflicts = sorted(
            [v for v in survivors if self._revealed.get(v) == _KEY]
            + [v for v in dropped if self._revealed.get(v) == _SELF_MASK]
        )
        if conflicts:
            raise ShareRequestRefused(
                f"the other kind of share was already revealed for {conflicts}"
            )
        self_mask = {v: self._held_self_mask[v] for v in sorted(survivors) if v in self._held_self_mask}
        key = {v: self._held_key[v] for v in sorted(dropped) if v in self._held_key}
        for v in self_mask:
            self._revealed[v] = _SELF_MASK
        for v in key:
            self._revealed[v] = _KEY
        self._phase = "unmasked"
        return UnmaskResponse(p.session_id, self.silo_id, self_mask, key)

    def _advance(self, expected: str, new: str) -> None:
        if self._phase != expected:
            raise PhaseOrderError(f"{self.silo_id}: called in phase {self._phase!r}, expected {expected!r}")
        self._phase = new
