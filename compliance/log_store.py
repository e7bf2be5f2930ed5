"""The SQLite file behind an audit log: schema, connections and raw reads.

Why SQLite in WAL mode with synchronous=FULL: an append is one transaction (entry + its
signed checkpoint) that is either wholly on disk after COMMIT or absent after a crash, and
readers (the `compliance` CLI) never block the node that is writing. Triggers refuse UPDATE
and DELETE so a bug cannot rewrite history through this code; an attacker with the file can
drop them, which is what the Merkle tree and signatures are for.

Readers get the raw stored bytes (`RawLog`), not parsed objects: verification must judge
exactly what is on disk.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from compliance.errors import LogNotFound

SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    idx   INTEGER PRIMARY KEY,
    entry BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    seq        INTEGER PRIMARY KEY,
    size       INTEGER NOT NULL,
    origin     TEXT NOT NULL,
    root_hash  TEXT NOT NULL,
    timestamp  TEXT NOT NULL,
    signature  BLOB NOT NULL,
    public_key BLOB NOT NULL
);
CREATE TRIGGER IF NOT EXISTS entries_append_only_update BEFORE UPDATE ON entries
BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;
CREATE TRIGGER IF NOT EXISTS entries_append_only_delete BEFORE DELETE ON entries
BEGIN SELECT RAISE(ABORT, 'audit entries are append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_append_only_update BEFORE UPDATE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
CREATE TRIGGER IF NOT EXISTS checkpoints_append_only_delete BEFORE DELETE ON checkpoints
BEGIN SELECT RAISE(ABORT, 'audit checkpoints are append-only'); END;
"""


@dataclass(frozen=True)
class CheckpointRow:
    """One stored checkpoint exactly as read (unvalidated)."""

    seq: int
    size: object
    origin: object
    root_hash: object
    timestamp: object
    signature: object
    public_key: object


@dataclass(frozen=True)
class RawLog:
    """Everything an audit log file holds, as stored."""

    path: Path
    origin: str | None
    entries: list[tuple[int, bytes]]
    checkpoints: list[CheckpointRow]


def connect_for_writing(db_path: Path) -> sqlite3.Connection:
    """Open (creating if needed) a log for appending: WAL, synchronous=FULL, autocommit
    mode so each append controls its own BEGIN IMMEDIATE … COMMIT."""
    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db_path, isolation_level=None, timeout=30.0)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.executescript(_SCHEMA)
    conn.execute(
        "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (SCHEMA_VERSION,)
    )
    return conn


def connect_read_only(db_path: Path) -> sqlite3.Connection:
    """Open an existing log without any possibility of changing it."""
    db_path = Path(db_path)
    if not db_path.is_file():
        raise LogNotFound(f"no audit log at {db_path}")
    conn = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
    return conn


def read_raw_log(db_path: Path) -> RawLog:
    """Read entries (by index) and checkpoints (in signing order) in one read transaction."""
    conn = connect_read_only(db_path)
    try:
        conn.execute("BEGIN")
        try:
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            entries = conn.execute("SELECT idx, entry FROM entries ORDER BY idx").fetchall()
            rows = conn.execute(
                "SELECT seq, size, origin, root_hash, timestamp, signature, public_key "
                "FROM checkpoints ORDER BY seq"
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise LogNotFound(f"{db_path} is not a HealthFed audit log ({exc})") from None
        finally:
            conn.execute("COMMIT")
    finally:
        conn.close()
    return RawLog(
        path=Path(db_path),
        origin=meta.get("origin"),
        entries=[(int(i), _as_bytes(e)) for i, e in entries],
        checkpoints=[CheckpointRow(*row) for row in rows],
    )


def _as_bytes(value: object) -> bytes:
    """Stored entries are BLOBs; a hand edit may leave TEXT (or a number) — judge its bytes."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return str(value).encode("utf-8")
