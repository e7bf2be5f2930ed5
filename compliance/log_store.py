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

from compliance.errors import LogCorrupt, LogNotFound

SCHEMA_VERSION = "1"
SQLITE_MAGIC = b"SQLite format 3\x00"
_TABLES = frozenset({"meta", "entries", "checkpoints"})

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


def read_raw_log(db_path: Path, *, expected: bool = False) -> RawLog:
    """Read entries (by index) and checkpoints (in signing order) in one read transaction.

    Why two errors: a file that never was an audit log (another SQLite database, a PDF) is a
    wrong input (`LogNotFound`), but an audit log that can no longer be read whole —
    truncated, pages overwritten, tables dropped — is evidence of tampering or corruption
    (`LogCorrupt`), and `compliance verify` must say FAILED, not "wrong file". `expected`
    says the file sits where a node keeps its audit log, so any damage is corruption.
    """
    db_path = Path(db_path)
    _check_header(db_path, expected)
    conn = connect_read_only(db_path)
    try:
        try:
            conn.execute("BEGIN")
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not _TABLES <= tables:
                missing = ", ".join(sorted(_TABLES - tables))
                if expected or tables & _TABLES:
                    raise LogCorrupt(f"{db_path}: the audit log's table(s) {missing} are gone")
                raise LogNotFound(f"{db_path} is not a HealthFed audit log (no {missing} tables)")
            check = conn.execute("PRAGMA quick_check").fetchall()
            if [tuple(r) for r in check] != [("ok",)]:
                raise LogCorrupt(
                    f"{db_path} is damaged (SQLite integrity check: {check[0][0]}"
                    f"{f' and {len(check) - 1} more problems' if len(check) > 1 else ''})"
                )
            meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            entries = conn.execute("SELECT idx, entry FROM entries ORDER BY idx").fetchall()
            rows = conn.execute(
                "SELECT seq, size, origin, root_hash, timestamp, signature, public_key "
                "FROM checkpoints ORDER BY seq"
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise LogCorrupt(f"{db_path} is damaged and cannot be read whole ({exc})") from None
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")
    finally:
        conn.close()
    return RawLog(
        path=Path(db_path),
        origin=meta.get("origin"),
        entries=[(int(i), _as_bytes(e)) for i, e in entries],
        checkpoints=[CheckpointRow(*row) for row in rows],
    )


def _check_header(db_path: Path, expected: bool) -> None:
    """Tell a truncated or overwritten audit log from a file that never was one."""
    if not db_path.is_file():
        raise LogNotFound(f"no audit log at {db_path}")
    with db_path.open("rb") as stream:
        head = stream.read(len(SQLITE_MAGIC))
    if head == SQLITE_MAGIC:
        return
    if not head:
        raise LogCorrupt(f"{db_path} is empty: the audit log was truncated to 0 bytes")
    if expected:
        raise LogCorrupt(f"{db_path} no longer starts with the SQLite header: it was overwritten or damaged")
    raise LogNotFound(f"{db_path} is not a HealthFed audit log (not an SQLite database)")


def _as_bytes(value: object) -> bytes:
    """Stored entries are BLOBs; a hand edit may leave TEXT (or a number) — judge its bytes."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    return str(value).encode("utf-8")
