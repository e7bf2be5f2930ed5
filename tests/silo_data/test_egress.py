"""The egress record keeps size and hash of each released payload, never the payload."""

from __future__ import annotations

import hashlib
from pathlib import Path

from silo_node.egress import EgressRecord

from .conftest import RecordingAudit


def test_records_size_and_hash_only(conn, state_dir: Path, audit: RecordingAudit) -> None:
    egress = EgressRecord(conn, audit=audit)
    payload = b"masked-update:" + bytes(range(256)) * 40
    egress.record("ab" * 32, 3, "masked_update", payload, "aggregator.example.org")
    egress.record("ab" * 32, 3, "metrics", b'{"loss": 0.5}', "aggregator.example.org")
    entries = EgressRecord(conn).list()
    assert [(e.round, e.kind, e.bytes) for e in entries] == [(3, "masked_update", len(payload)), (3, "metrics", 13)]
    assert entries[0].sha256 == hashlib.sha256(payload).hexdigest()
    conn.execute("PRAGMA wal_checkpoint(FULL)")
    assert payload[10:60] not in (state_dir / "silo.sqlite3").read_bytes()
    assert audit.kinds() == ["payload.released", "payload.released"]
    assert audit.events[0]["detail"]["sha256"] == entries[0].sha256
