"""The egress record: every payload that leaves the silo, by round, kind, size and hash.

The payload itself is never stored (it is what left; keeping a copy would only add risk):
its sha256 lets the hospital match this record against the aggregator's and the audit log's.
"""

from __future__ import annotations

import hashlib
import sqlite3
from silo_node.audit_sink import AuditSink
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

_SCHEMA = """
CREATE TABLE IF NOT EXISTS egress (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          TEXT NOT NULL,
    plan_hash   TEXT NOT NULL,
    round       INTEGER NOT NULL CHECK (round >= 0),
    kind        TEXT NOT NULL,
    bytes       INTEGER NOT NULL CHECK (bytes >= 0),
    sha256      TEXT NOT NULL,
    recipient   TEXT NOT NULL
)
"""




@dataclass(frozen=True)
class EgressEntry:
    id: int
    at: str
    plan_hash: str
    round: int
    kind: str
    bytes: int
    sha256: str
    recipient: str


class EgressRecord:
    def __init__(self, conn: sqlite3.Connection, *, audit: AuditSink | None = None, actor: str | None = None) -> None:
        """`actor` defaults to the audit log's origin (`silo:<id>`): the node releases."""
        self._conn = conn
        self._audit = audit
        self._actor = actor or str(getattr(audit, "origin", "") or "silo")
        conn.execute(_SCHEMA)

    def record(self, plan_hash: str, round: int, kind: str, payload: bytes, recipient: str) -> None:
        """Records one released payload (size and sha256 only); also a `payload.released`
        audit event when an audit log is attached."""
        digest = hashlib.sha256(payload).hexdigest()
        at = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        self._conn.execute(
            "INSERT INTO egress (at, plan_hash, round, kind, bytes, sha256, recipient) VALUES (?,?,?,?,?,?,?)",
            (at, plan_hash, round, kind, len(payload), digest, recipient),
        )
        if self._audit is not None:
            self._audit.record(
                "payload.released", actor=self._actor, entities={"plan": plan_hash},
                detail={"plan_hash": plan_hash, "round": round, "kind": kind, "bytes": len(payload),
                        "sha256": digest, "recipient": recipient},
            )

    def list(self, plan_hash: str | None = None) -> list[EgressEntry]:
        query = "SELECT id, at, plan_hash, round, kind, bytes, sha256, recipient FROM egress"
        rows = (self._conn.execute(query + " WHERE plan_hash = ? ORDER BY id", (plan_hash,)) if plan_hash
                else self._conn.execute(query + " ORDER BY id"))
        return [EgressEntry(*row) for row in rows.fetchall()]
