"""The append-only, tamper-evident audit log every HealthFed node writes.

Design choice — a signed checkpoint on every append. Each `record()` writes, in one SQLite
transaction, the entry and an Ed25519-signed checkpoint of the tree that now includes it.
Why this rather than chaining each entry to the previous root: a chain alone cannot reveal
that the last entries were cut off (the shorter chain is still a valid chain), whereas with a
checkpoint per append

* cutting entries off the tail leaves checkpoints whose size exceeds the entries present;
* every prefix of the log is signed, so `compliance verify` names the exact first bad entry
  (the first checkpoint whose root no longer matches covers exactly one new entry);
* any checkpoint can be handed to a witness (the aggregator) at any time.

The cost is one signature (~50 µs) and one ~200-byte row per event, small next to a training
round. What no local mechanism can show is an attacker who holds the signing key and cuts the
log *and* its checkpoints back consistently: that is why silos hand checkpoints to the
aggregator's `WitnessStore` each round, and why `compliance verify` accepts a pinned public
key and a witness database.

Several processes may append to the same file: each append takes SQLite's write lock
(BEGIN IMMEDIATE) and first catches up with entries other writers added.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Mapping

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from compliance.checkpoints import SignedCheckpoint, sign_checkpoint
from compliance.clock import Clock, utc_now
from compliance.entry import EntityValue, build_entry, validate_event
from compliance.errors import (
    InvalidEvent,
    LogIntegrityError,
    OriginMismatch,
    SigningKeyMismatch,
)
from compliance.log_store import connect_for_writing
from compliance.merkle import MerkleTree, leaf_hash
from compliance.signing import fingerprint, load_or_create_signing_key, public_bytes
from healthfed_common.canonical_json import NonCanonicalValue


class AuditLog:
    """An open audit log of one node (`origin`), ready to append. Use `AuditLog.open`."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        key: Ed25519PrivateKey,
        origin: str,
        db_path: Path,
        clock: Clock,
    ) -> None:
        self._conn = conn
        self._key = key
        self._public_key = public_bytes(key)
        self.origin = origin
        self.db_path = db_path
        self._clock = clock
        self._tree = MerkleTree()

    @classmethod
    def open(
        cls, db_path: Path, key_path: Path, origin: str, *, clock: Clock | None = None
    ) -> AuditLog:
        """Open (or create) the log at `db_path` for node `origin`, signing with the key at
        `key_path` (created with mode 0600 if missing).

        Fails closed: refuses a log that belongs to another origin, whose last checkpoint was
        signed by a different key, or whose stored entries no longer match its last
        checkpoint — appending would otherwise sign over tampered history.
        """
        if not isinstance(origin, str) or not origin.strip():
            raise InvalidEvent(f"audit log origin must be a non-empty node id, not {origin!r}")
        db_path = Path(db_path)
        key = load_or_create_signing_key(Path(key_path))
        conn = connect_for_writing(db_path)
        log = cls(conn, key, origin, db_path, clock or utc_now)
        try:
            log._claim_origin()
            log._conn.execute("BEGIN")
            try:
                log._catch_up()
                log._check_head(key_path)
            finally:
                log._conn.execute("COMMIT")
        except BaseException:
            conn.close()
            raise
        return log

    # -- public API ---------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Number of entries this handle has seen (call after `record` for the latest)."""
        return self._tree.size

    @property
    def public_key(self) -> bytes:
        """The raw Ed25519 public key that signs this log's checkpoints."""
        return self._public_key

    def root(self, size: int | None = None) -> bytes:
        """Merkle root of the first `size` entries (all by default, including entries other
        processes appended)."""
        self._refresh()
        return self._tree.root(size)

    def record(
        self,
        kind: str,
        *,
        actor: str,
        outcome: str = "success",
        requestor: bool = True,
        entities: Mapping[str, EntityValue] | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> int:
        """Append one event and a signed checkpoint covering it; return the entry's index.

        Raises `UnknownEventKind` for a kind outside `compliance.events.EVENT_KINDS` and
        `InvalidEvent` for a bad outcome, actor, entity or detail — before touching the log.
        """
        plain_entities, plain_detail = validate_event(
            kind, actor, outcome, requestor, entities, detail
        )
        moment = self._clock()
        with self._write_transaction():
            self._catch_up()
            index = self._tree.size
            try:
                data = build_entry(
                    index,
                    kind,
                    origin=self.origin,
                    actor=actor,
                    outcome=outcome,
                    requestor=requestor,
                    entities=plain_entities,
                    detail=plain_detail,
                    moment=moment,
                )
            except (NonCanonicalValue, TypeError, ValueError) as exc:
                raise InvalidEvent(f"{kind} event has no canonical JSON form: {exc}") from None
            self._conn.execute("INSERT INTO entries(idx, entry) VALUES (?, ?)", (index, data))
            self._tree.append_entry(data)
            self._insert_checkpoint(self._sign_head(moment))
        return index

    def sign_checkpoint(self) -> SignedCheckpoint:
        """Sign the current tree head now (fresh timestamp), store it and return it — what a
        silo sends the aggregator's witness each round."""
        with self._write_transaction():
            self._catch_up()
            checkpoint = self._sign_head(self._clock())
            self._insert_checkpoint(checkpoint)
        return checkpoint

    def latest_checkpoint(self) -> SignedCheckpoint | None:
        """The most recently stored checkpoint, if any."""
        row = self._conn.execute(
            "SELECT origin, size, root_hash, timestamp, signature, public_key "
            "FROM checkpoints ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        return SignedCheckpoint(row[0], row[1], row[2], row[3], bytes(row[4]), bytes(row[5]))

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """RFC 9162 proof that the log at `new_size` extends the log at `old_size`."""
        self._refresh()
        return self._tree.consistency_proof(old_size, new_size)

    def entry_bytes(self, index: int) -> bytes:
        """The stored bytes of entry `index`: what its leaf hash is taken over, so a peer given
        them and an inclusion proof can check the entry is in a checkpoint's tree."""
        row = self._conn.execute("SELECT entry FROM entries WHERE idx=?", (index,)).fetchone()
        if row is None:
            raise InvalidEvent(f"entry {index} is not stored in this log")
        return bytes(row[0])

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """RFC 9162 proof that entry `index` is in the log of `size` entries."""
        self._refresh()
        return self._tree.inclusion_proof(index, size)

    def close(self) -> None:
        """Close the database connection (the log stays valid on disk)."""
        self._conn.close()

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals ----------------------------------------------------------------------

    def _write_transaction(self) -> _Transaction:
        return _Transaction(self)

    def _claim_origin(self) -> None:
        """Bind the file to its node: a log is one node's history, never shared."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('origin', ?)", (self.origin,)
            )
            stored = self._conn.execute("SELECT value FROM meta WHERE key='origin'").fetchone()
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        if stored[0] != self.origin:
            raise OriginMismatch(
                f"audit log {self.db_path} belongs to {stored[0]!r}, not {self.origin!r}"
            )

    def _catch_up(self) -> None:
        """Load entries appended since this handle last looked (by us or another process)."""
        rows = self._conn.execute(
            "SELECT idx, entry FROM entries WHERE idx >= ? ORDER BY idx", (self._tree.size,)
        ).fetchall()
        for idx, data in rows:
            if idx != self._tree.size:
                raise LogIntegrityError(
                    f"audit log {self.db_path}: entry {self._tree.size} is missing "
                    f"(next stored index is {idx}); run `compliance verify`",
                    index=self._tree.size,
                )
            self._tree.append_leaf_hash(leaf_hash(bytes(data)))

    def _refresh(self) -> None:
        self._conn.execute("BEGIN")
        try:
            self._catch_up()
        finally:
            self._conn.execute("COMMIT")

    def _check_head(self, key_path: Path) -> None:
        head = self.latest_checkpoint()
        if head is None:
            return
        if head.public_key != self._public_key:
            raise SigningKeyMismatch(
                f"audit log {self.db_path} was signed by key {head.key_fingerprint[:16]}…, "
                f"but {key_path} holds key {fingerprint(self._public_key)[:16]}…; "
                "restore the original key or run `compliance verify`"
            )
        if head.size > self._tree.size or self._tree.root(head.size) != head.root:
            first_bad = min(head.size, self._tree.size)
            raise LogIntegrityError(
                f"audit log {self.db_path} no longer matches its last checkpoint "
                f"(size {head.size}); refusing to append. Run `compliance verify` to find "
                "the first bad entry",
                index=first_bad if head.size > self._tree.size else None,
            )

    def _sign_head(self, moment: datetime) -> SignedCheckpoint:
        return sign_checkpoint(self._key, self.origin, self._tree.size, self._tree.root(), moment)

    def _insert_checkpoint(self, checkpoint: SignedCheckpoint) -> None:
        self._conn.execute(
            "INSERT INTO checkpoints(size, origin, root_hash, timestamp, signature, public_key)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                checkpoint.size,
                checkpoint.origin,
                checkpoint.root_hash,
                checkpoint.timestamp,
                checkpoint.signature,
                checkpoint.public_key,
            ),
        )

    def _forget(self) -> None:
        """Drop in-memory state after a failed transaction; the next operation's catch-up
        rebuilds it from what is durably on disk."""
        self._tree = MerkleTree()

    def _rollback(self) -> None:
        if self._conn.in_transaction:
            self._conn.execute("ROLLBACK")
        self._forget()


class _Transaction:
    """BEGIN IMMEDIATE … COMMIT; on any error ROLLBACK and rebuild the in-memory tree, so
    memory never runs ahead of what is durably on disk."""

    def __init__(self, log: AuditLog) -> None:
        self._log = log

    def __enter__(self) -> None:
        self._log._conn.execute("BEGIN IMMEDIATE")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            try:
                self._log._conn.execute("COMMIT")
                return
            except BaseException:
                self._log._rollback()
                raise
        self._log._rollback()
