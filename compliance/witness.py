"""The aggregator's store of silos' signed checkpoints: the outside anchor of every silo log.

Why: a silo's own file cannot prove it was not cut back and re-signed by someone holding the
silo's key. Each round the silo hands its latest checkpoint and a consistency proof from the
checkpoint it handed before; the aggregator accepts it only if the signature verifies under
the key it enrolled for that silo, the log never shrank, and the proof shows the new tree
extends the old one. Later, `compliance verify --witness` checks the silo's file against
every checkpoint stored here. (Silos can witness the aggregator's log the same way.)
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from types import TracebackType
from typing import Sequence

from compliance.checkpoints import SignedCheckpoint
from compliance.clock import Clock, format_timestamp, utc_now
from compliance.errors import ComplianceError, CheckpointRejected, InvalidProof, LogNotFound, SignatureInvalid
from compliance.merkle import EMPTY_ROOT, verify_consistency
from compliance.signing import fingerprint

_SCHEMA = """
CREATE TABLE IF NOT EXISTS witnessed (
    seq         INTEGER PRIMARY KEY,
    origin      TEXT NOT NULL,
    size        INTEGER NOT NULL,
    root_hash   TEXT NOT NULL,
    timestamp   TEXT NOT NULL,
    signature   BLOB NOT NULL,
    public_key  BLOB NOT NULL,
    proof       TEXT NOT NULL,
    accepted_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS witnessed_origin ON witnessed(origin, seq);
CREATE TRIGGER IF NOT EXISTS witnessed_append_only_update BEFORE UPDATE ON witnessed
BEGIN SELECT RAISE(ABORT, 'witnessed checkpoints are append-only'); END;
CREATE TRIGGER IF NOT EXISTS witnessed_append_only_delete BEFORE DELETE ON witnessed
BEGIN SELECT RAISE(ABORT, 'witnessed checkpoints are append-only'); END;
"""

_COLUMNS = "origin, size, root_hash, timestamp, signature, public_key"


class WitnessStore:
    """Checkpoints accepted from other nodes, one append-only history per origin."""

    def __init__(self, conn: sqlite3.Connection, clock: Clock) -> None:
        self._conn = conn
        self._clock = clock

    @classmethod
    def open(cls, db_path: Path, *, clock: Clock | None = None) -> WitnessStore:
        """Open (creating if needed) the witness database at `db_path`."""
        db_path = Path(db_path)
        db_path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(db_path, isolation_level=None, timeout=30.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(_SCHEMA)
        return cls(conn, clock or utc_now)

    def accept(
        self,
        checkpoint: SignedCheckpoint,
        consistency_proof: Sequence[bytes],
        trusted_public_key: bytes,
    ) -> None:
        """Store `checkpoint` if it is signed by `trusted_public_key` and extends the last
        checkpoint accepted from the same origin (by `consistency_proof`); otherwise raise
        `CheckpointRejected` saying why. The check and the insert are one transaction."""
        who = f"checkpoint of {checkpoint.origin} at size {checkpoint.size}"
        try:
            checkpoint.verify(trusted_public_key)
        except SignatureInvalid as exc:
            raise CheckpointRejected(f"rejected {who}: {exc}") from None
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            last = self._latest(checkpoint.origin)
            if last is not None and last.public_key != trusted_public_key:
                raise CheckpointRejected(
                    f"rejected {who}: {checkpoint.origin} was witnessed under key "
                    f"{last.key_fingerprint[:16]}…, not {fingerprint(trusted_public_key)[:16]}…"
                )
            old_size = 0 if last is None else last.size
            old_root = EMPTY_ROOT if last is None else last.root
            if checkpoint.size < old_size:
                raise CheckpointRejected(
                    f"rejected {who}: the log shrank from {old_size} entries (rollback)"
                )
            try:
                verify_consistency(
                    old_size, checkpoint.size, old_root, checkpoint.root, list(consistency_proof)
                )
            except InvalidProof as exc:
                raise CheckpointRejected(
                    f"rejected {who}: not consistent with the witnessed size {old_size}: {exc}"
                ) from None
            self._conn.execute(
                f"INSERT INTO witnessed({_COLUMNS}, proof, accepted_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    checkpoint.origin,
                    checkpoint.size,
                    checkpoint.root_hash,
                    checkpoint.timestamp,
                    checkpoint.signature,
                    checkpoint.public_key,
                    json.dumps([p.hex() for p in consistency_proof]),
                    format_timestamp(self._clock()),
                ),
            )
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    def latest(self, origin: str) -> SignedCheckpoint | None:
        """The last checkpoint accepted from `origin`."""
        return self._latest(origin)

    def checkpoints(self, origin: str) -> list[SignedCheckpoint]:
        """Every checkpoint accepted from `origin`, in acceptance order."""
        rows = self._conn.execute(
            f"SELECT {_COLUMNS} FROM witnessed WHERE origin=? ORDER BY seq", (origin,)
        ).fetchall()
        return [_checkpoint(row) for row in rows]

    def origins(self) -> list[str]:
        """Every origin with at least one accepted checkpoint."""
        return [r[0] for r in self._conn.execute("SELECT DISTINCT origin FROM witnessed ORDER BY origin")]

    def close(self) -> None:
        """Close the database."""
        self._conn.close()

    def __enter__(self) -> WitnessStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _latest(self, origin: str) -> SignedCheckpoint | None:
        row = self._conn.execute(
            f"SELECT {_COLUMNS} FROM witnessed WHERE origin=? ORDER BY seq DESC LIMIT 1",
            (origin,),
        ).fetchone()
        return None if row is None else _checkpoint(row)


def read_witnessed(db_path: Path, origin: str) -> list[SignedCheckpoint]:
    """Checkpoints a witness database holds for `origin`, read without changing the file."""
    db_path = Path(db_path)
    if not db_path.is_file():
        raise LogNotFound(f"no witness database at {db_path}")
    conn = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM witnessed WHERE origin=? ORDER BY seq", (origin,)
        ).fetchall()
    except sqlite3.DatabaseError as exc:
        raise LogNotFound(f"{db_path} is not a witness database ({exc})") from None
    finally:
        conn.close()
    return [_checkpoint(row) for row in rows]


def _checkpoint(row: tuple[object, ...]) -> SignedCheckpoint:
    origin, size, root_hash, timestamp, signature, public_key = row
    return SignedCheckpoint(
        origin=str(origin),
        size=int(size),  # type: ignore[call-overload]
        root_hash=str(root_hash),
        timestamp=str(timestamp),
        signature=bytes(signature),  # type: ignore[call-overload]
        public_key=bytes(public_key),  # type: ignore[call-overload]
    )


def find_witnesses(candidates: Sequence[Path], origin: str) -> list[tuple[Path, list[SignedCheckpoint]]]:
    """Every witness database among `candidates` that holds checkpoints of `origin`, in order.

    Why automatic: a rollback (newest entries removed together with their checkpoints) is
    invisible inside the log; an officer who forgets `--witness` should not get a clean bill
    when the evidence sits next to the node. Why every one: the aggregator's log has one
    witness per silo, and a coordinator could show different silos different histories.
    Unreadable candidates are skipped, not fatal: the result then says the rollback check
    was not done."""
    found = []
    for path in candidates:
        if not Path(path).is_file():
            continue
        try:
            checkpoints = read_witnessed(Path(path), origin)
        except (ComplianceError, sqlite3.Error):
            continue
        if checkpoints:
            found.append((Path(path), checkpoints))
    return found
