"""What this silo already released per (plan, round): a retried round re-sends the same
update instead of training again.

Why: under DP-SGD every training run draws fresh noise, so re-running `work` for a round
whose update may already have reached the aggregator would spend privacy twice while the
ledger (rightly) charges the round once. Storing the released result makes retries free and
exact, across aggregator restarts and silo restarts alike."""

from __future__ import annotations

import hashlib
import sqlite3
import time

from healthfed_common.wire import codec
from healthfed_common.wire.messages import TrainResult

_SCHEMA = """
CREATE TABLE IF NOT EXISTS released_result (
    plan_hash TEXT NOT NULL, round INTEGER NOT NULL, input_sha256 TEXT NOT NULL,
    payload BLOB NOT NULL, released_at REAL NOT NULL, PRIMARY KEY (plan_hash, round))
"""


def input_digest(arrays: tuple[object, ...]) -> str:
    digest = hashlib.sha256()
    for array in arrays:
        digest.update(memoryview(array).tobytes())  # type: ignore[arg-type]
    return digest.hexdigest()


class ReleasedResults:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        conn.execute(_SCHEMA)
        self.masked = MaskedUpdates(conn)

    def get(self, plan_hash: str, round_number: int) -> tuple[str, TrainResult] | None:
        row = self._conn.execute(
            "SELECT input_sha256, payload FROM released_result WHERE plan_hash=? AND round=?",
            (plan_hash, round_number),
        ).fetchone()
        return (row[0], codec.decode(row[1])) if row else None

    def put(self, result: TrainResult, input_sha256: str) -> None:
        self._conn.execute(
            "INSERT OR IGNORE INTO released_result VALUES (?,?,?,?,?)",
            (result.plan_hash, result.round, input_sha256, codec.encode(result), time.time()),
        )


class MaskedUpdates:
    """Which secure-aggregation session each (plan, round) update entered, durably.

    Why: two masked inputs of one update under different masks, each unmasked as part of a
    different sum, reveal the update through the difference of the sums. So an update enters
    at most one session: the row is written (session recorded) before the advertisement leaves
    and marked `masked` -- committed -- before the masked input leaves; a later offer of the same
    round in another session is refused."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        conn.execute(
            """CREATE TABLE IF NOT EXISTS secagg_session (
                plan_hash TEXT NOT NULL, round INTEGER NOT NULL, session_id BLOB NOT NULL,
                masked INTEGER NOT NULL DEFAULT 0, updated_at REAL NOT NULL,
                PRIMARY KEY (plan_hash, round))"""
        )

    def session(self, plan_hash: str, round_number: int) -> tuple[bytes, bool] | None:
        row = self._conn.execute(
            "SELECT session_id, masked FROM secagg_session WHERE plan_hash=? AND round=?", (plan_hash, round_number)
        ).fetchone()
        return (bytes(row[0]), bool(row[1])) if row else None

    def enter(self, plan_hash: str, round_number: int, session_id: bytes) -> None:
        """Record the session the update is entering; refuses to replace a masked one."""
        current = self.session(plan_hash, round_number)
        if current is not None and current[1] and current[0] != session_id:
            raise PermissionError("update already masked in another session")
        self._conn.execute(
            "INSERT INTO secagg_session VALUES (?,?,?,0,?) ON CONFLICT(plan_hash, round) DO UPDATE SET "
            "session_id = excluded.session_id, updated_at = excluded.updated_at WHERE masked = 0",
            (plan_hash, round_number, session_id, time.time()),
        )

    def mark_masked(self, plan_hash: str, round_number: int, session_id: bytes) -> None:
        cursor = self._conn.execute(
            "UPDATE secagg_session SET masked = 1, updated_at = ? WHERE plan_hash=? AND round=? AND session_id=?",
            (time.time(), plan_hash, round_number, session_id),
        )
        if cursor.rowcount != 1:
            raise PermissionError("no record of this session for the round")
        if self._conn.in_transaction:
            self._conn.commit()


class WitnessedCheckpoints:
    """The size of this silo's audit log at the last checkpoint the aggregator accepted."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        conn.execute("CREATE TABLE IF NOT EXISTS witnessed_checkpoint (id INTEGER PRIMARY KEY CHECK (id = 1), size INTEGER NOT NULL)")

    def last_size(self) -> int:
        row = self._conn.execute("SELECT size FROM witnessed_checkpoint WHERE id = 1").fetchone()
        return int(row[0]) if row else 0

    def set_last_size(self, size: int) -> None:
        self._conn.execute("INSERT INTO witnessed_checkpoint VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET size = excluded.size", (size,))
