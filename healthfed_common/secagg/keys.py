"""Key agreement, key derivation, share encryption and the bytes that get signed.

Per round each silo makes two X25519 key pairs: `c` (share transport) and `s` (masking).
Separate pairs mean that revealing s_u for a dropped silo (to remove its pairwise masks)
never exposes the keys that protected the shares it sent. Every derived key is bound by
HKDF-SHA256 to the session id and to the ids of the parties; ciphertexts are bound by AES-GCM
associated data to (session, sender, recipient), so a share cannot be replayed into another
round or redirected to another silo without failing authentication.
"""

from __future__ import annotations

import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from healthfed_common.secagg.errors import AuthenticationFailed, ProtocolViolation

DOMAIN: bytes = b"healthfed/secagg/v1"
PUBLIC_KEY_BYTES: int = 32
PRIVATE_KEY_BYTES: int = 32
_NONCE_BYTES: int = 12
GRAPH_NONCE_BYTES: int = 32
COMMITMENT_BYTES: int = 32


def lp(*parts: bytes) -> bytes:
    """Length-prefixed concatenation: an injective encoding, so distinct tuples of fields can
    never produce the same signed or authenticated bytes."""
    return b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def generate_keypair() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair as raw (private, public) bytes, from the OS CSPRNG."""
    private = X25519PrivateKey.generate()
    return _raw_private(private), _raw_public(private.public_key())


def public_from_private(private_raw: bytes) -> bytes:
    """The public key of a raw private key (the aggregator checks reconstructed s_u keys
    against the advertised public key with this)."""
    return _raw_public(X25519PrivateKey.from_private_bytes(private_raw).public_key())


def agree(private_raw: bytes, peer_public: bytes) -> bytes:
    """Raw X25519 shared secret; low-order or malformed peer keys are a protocol violation."""
    if len(peer_public) != PUBLIC_KEY_BYTES:
        raise ProtocolViolation(f"public key must be {PUBLIC_KEY_BYTES} bytes")
    try:
        private = X25519PrivateKey.from_private_bytes(private_raw)
        return private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as exc:  # all-zero shared secret: a low-order point was advertised
        raise ProtocolViolation("peer public key is invalid (low-order point)") from exc


def _hkdf(secret: bytes, session_id: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=session_id, info=info).derive(secret)


def mask_key(private_raw: bytes, peer_public: bytes, session_id: bytes, a: str, b: str) -> bytes:
    """The pairwise mask seed s_{a,b} (symmetric in a and b)."""
    low, high = sorted((a, b))
    info = lp(DOMAIN, b"pairwise-mask", low.encode(), high.encode())
    return _hkdf(agree(private_raw, peer_public), session_id, info)


def transport_key(
    private_raw: bytes, peer_public: bytes, session_id: bytes, sender: str, recipient: str
) -> bytes:
    """The AES-256-GCM key for shares from `sender` to `recipient` (one key per direction)."""
    info = lp(DOMAIN, b"share-transport", sender.encode(), recipient.encode())
    return _hkdf(agree(private_raw, peer_public), session_id, info)


def share_aad(session_id: bytes, sender: str, recipient: str) -> bytes:
    """Associated data binding an encrypted share to its session, sender and recipient."""
    return lp(DOMAIN, b"share", session_id, sender.encode(), recipient.encode())


def seal(key: bytes, aad: bytes, plaintext: bytes) -> bytes:
    """AES-GCM encrypt with a random 96-bit nonce, returned as nonce || ciphertext || tag."""
    nonce = os.urandom(_NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_sealed(key: bytes, aad: bytes, blob: bytes) -> bytes:
    """Decrypt what `seal` produced; any tampering, replay into another session or redirection
    to another recipient fails here."""
    if len(blob) < _NONCE_BYTES + 16:
        raise ProtocolViolation("encrypted share is too short")
    try:
        return AESGCM(key).decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], aad)
    except InvalidTag as exc:
        raise AuthenticationFailed("encrypted share failed authentication") from exc


def advertisement_payload(
    session_id: bytes, silo_id: str, c_public: bytes, s_public: bytes, nonce: bytes, commitment: bytes
) -> bytes:
    """The exact bytes a silo signs with its long-term key for its key advertisement: both
    public keys, the silo's contribution to the SecAgg+ graph seed and its commitment to its
    self-mask seed, all bound to the session (plan, round, attempt, cohort and model)."""
    return lp(DOMAIN, b"advertise", session_id, silo_id.encode(), c_public, s_public, nonce, commitment)


def self_mask_commitment(session_id: bytes, silo_id: str, seed: bytes) -> bytes:
    """A hiding, binding commitment to the self-mask seed (a uniformly random 32-byte value, so
    a hash suffices): the aggregator checks every reconstructed seed against it, so a silo that
    sent inconsistent shares cannot make the sum come out wrong unnoticed."""
    return hashlib.sha256(lp(DOMAIN, b"self-mask-commitment", session_id, silo_id.encode(), seed)).digest()


def consistency_payload(session_id: bytes, survivors: tuple[str, ...], dropped: tuple[str, ...]) -> bytes:
    """What each surviving silo signs in the consistency round (Bonawitz et al. 2017, §6): the
    one (survivors, dropped) split it will ever answer in this session."""
    return lp(
        DOMAIN, b"consistency", session_id,
        lp(*(s.encode() for s in survivors)), lp(*(s.encode() for s in dropped)),
    )


def _raw_private(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def _raw_public(key: X25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)
