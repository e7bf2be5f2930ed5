"""Ways an attacker with write access to the SQLite file rewrites history (test helpers).

Each first drops the append-only triggers, as a real attacker would."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Iterator
from contextlib import contextmanager

from healthfed_common.canonical_json import canonical_json


@contextmanager
def raw(db: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        for name in ("entries_append_only_update", "entries_append_only_delete",
                     "checkpoints_append_only_update", "checkpoints_append_only_delete"):
            conn.execute(f"DROP TRIGGER IF EXISTS {name}")
        conn.execute("BEGIN")
        yield conn
        conn.execute("COMMIT")
    finally:
        conn.close()


def entry(db: Path, index: int) -> dict:
    with raw(db) as conn:
        (data,) = conn.execute("SELECT entry FROM entries WHERE idx=?", (index,)).fetchone()
    return json.loads(data)


def put(conn: sqlite3.Connection, index: int, document: dict) -> None:
    conn.execute("UPDATE entries SET entry=? WHERE idx=?", (canonical_json(document), index))
