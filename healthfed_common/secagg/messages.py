"""The messages of the secure-aggregation protocol, as frozen dataclasses.

Fields are only int, str, bytes, bool, tuples of those, dict[str, bytes] and tuples of
uint64 numpy arrays, so one generic codec (owned by the wire layer) can carry every message
without knowing the protocol. Every message names its session; those sent by a silo name the
sender, and point-to-point ones the recipient. The receiving side checks all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

U64Array = NDArray[np.uint64]
"""The vector type: uint64 numpy arrays (values < 2^b)."""

PROTOCOL_NAME: str = "healthfed-secagg/2"


@dataclass(frozen=True)
class KeyAdvertisement:
    """Phase 1, silo -> aggregator: the silo's two public keys for this session, its random
    contribution to the SecAgg+ graph seed (`nonce`) and its commitment to its self-mask seed.
    `signature` is the silo's pinned Ed25519 key over `keys.advertisement_payload(...)` (empty
    only in the library's unauthenticated mode, which production never uses)."""

    session_id: bytes
    sender: str
    c_public: bytes
    s_public: bytes
    nonce: bytes
    commitment: bytes
    signature: bytes = b""


@dataclass(frozen=True)
class KeyRoster:
    """Phase 1, aggregator -> every silo: the advertisements received before the deadline,
    each with its signature so every silo verifies every peer itself."""

    session_id: bytes
    silos: tuple[str, ...]
    c_public: dict[str, bytes]
    s_public: dict[str, bytes]
    nonces: dict[str, bytes]
    commitments: dict[str, bytes]
    signatures: dict[str, bytes]


@dataclass(frozen=True)
class EncryptedShare:
    """Phase 2, silo -> aggregator -> silo: the sender's shares of its self-mask seed and of
    its masking key for one recipient, AES-GCM-encrypted and bound to (session, sender,
    recipient). The aggregator relays it and cannot read it."""

    session_id: bytes
    sender: str
    recipient: str
    ciphertext: bytes


@dataclass(frozen=True)
class ShareInbox:
    """Phase 2, aggregator -> one silo: `senders` is every silo whose shares arrived before
    the deadline (public: the recipient checks it against the threshold); `ciphertexts` maps
    each neighbouring sender to its share for this recipient."""

    session_id: bytes
    recipient: str
    senders: tuple[str, ...]
    ciphertexts: dict[str, bytes]


@dataclass(frozen=True, eq=False)
class MaskedInput:
    """Phase 3, silo -> aggregator: the silo's vectors plus masks, each reduced mod 2^b.
    (eq=False: numpy arrays have no single truth value; compare fields explicitly.)"""

    session_id: bytes
    sender: str
    vectors: tuple[U64Array, ...]


@dataclass(frozen=True)
class UnmaskRequest:
    """Phases 4 and 5, aggregator -> surviving silos: whose masked input was counted
    (`survivors`) and who sent shares but no masked input (`dropped`). In the consistency
    phase `signatures` is empty and each survivor signs the split; in the unmask phase it
    carries the survivors' signatures over that same split, at least t of them."""

    session_id: bytes
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    signatures: dict[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True)
class ConsistencySignature:
    """Phase 4, silo -> aggregator: the silo's signature over the one survivor/dropped split
    it will answer in this session (`keys.consistency_payload`)."""

    session_id: bytes
    sender: str
    signature: bytes


@dataclass(frozen=True)
class UnmaskResponse:
    """Phase 4, silo -> aggregator: shares of b_v for surviving peers, of s_v for dropped
    peers -- never both for one peer."""

    session_id: bytes
    sender: str
    self_mask_shares: dict[str, bytes]
    key_shares: dict[str, bytes]
