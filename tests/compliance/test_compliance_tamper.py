"""Every kind of tampering with a real log file is detected, naming the first bad entry.

The log is written through `AuditLog` (16 entries, one signed checkpoint per append); the
tampering is done with plain sqlite3 on the file, as an attacker with file access would."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from compliance_support import ORIGIN, SteppingClock, open_log
from compliance_tamper import entry, put, raw
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from compliance.checkpoints import sign_checkpoint
from compliance.errors import LogIntegrityError, SigningKeyMismatch
from compliance.merkle import MerkleTree
from compliance.node_dir import NodePaths, trusted_public_key
from compliance.signing import load_public_key
from compliance.verify import VerificationResult, verify_log


def verify(node: Path, pinned: Path | None = None) -> VerificationResult:
    paths = NodePaths(node)
    key, _ = trusted_public_key(pinned, paths)
    return verify_log(paths.audit_db, key)


def first_bad(node: Path, pinned: Path | None = None) -> int:
    result = verify(node, pinned)
    assert not result.ok, "tampering went undetected"
    assert result.problem is not None
    return result.problem.index


def test_untouched_log_verifies(node: Path) -> None:
    result = verify(node)
    assert result.ok, result.summary()
    assert result.entries == 16
    assert result.checkpoints_checked == 16
    assert result.consistency_proofs_checked == 16
    assert result.latest is not None and result.latest.size == 16
    assert result.summary().startswith("VERIFIED")


def test_edited_entry(node: Path) -> None:
    db = NodePaths(node).audit_db
    doc = entry(db, 7)
    doc["detail"]["epsilon"] = 0.01  # under-state privacy spent
    with raw(db) as conn:
        put(conn, 7, doc)
    assert first_bad(node) == 7


def test_edit_that_only_changes_formatting(node: Path) -> None:
    db = NodePaths(node).audit_db
    with raw(db) as conn:
        (data,) = conn.execute("SELECT entry FROM entries WHERE idx=9").fetchone()
        conn.execute("UPDATE entries SET entry=? WHERE idx=9", (data.replace(b",", b", "),))
    result = verify(node)
    assert result.problem is not None and result.problem.index == 9
    assert "canonical" in result.problem.reason


def test_edited_entry_stored_as_text(node: Path) -> None:
    db = NodePaths(node).audit_db
    with raw(db) as conn:
        conn.execute("UPDATE entries SET entry=CAST(entry AS TEXT) || ' ' WHERE idx=2")
    assert first_bad(node) == 2


def test_deleted_entry(node: Path) -> None:
    with raw(NodePaths(node).audit_db) as conn:
        conn.execute("DELETE FROM entries WHERE idx=5")
    result = verify(node)
    assert result.problem is not None and result.problem.index == 5
    assert "entry 5 was removed" in result.problem.reason


def test_deleted_entry_with_renumbering(node: Path) -> None:
    db = NodePaths(node).audit_db
    docs = [entry(db, i) for i in range(16)]
    with raw(db) as conn:
        conn.execute("DELETE FROM entries")
        for new_index, doc in enumerate(d for i, d in enumerate(docs) if i != 5):
            doc["index"] = new_index
            put_new(conn, new_index, doc)
    assert first_bad(node) == 5


def test_inserted_entry(node: Path) -> None:
    db = NodePaths(node).audit_db
    docs = [entry(db, i) for i in range(16)]
    forged = dict(docs[4], index=4, detail={"note": "approved retroactively"})
    docs.insert(4, forged)
    with raw(db) as conn:
        conn.execute("DELETE FROM entries")
        for new_index, doc in enumerate(docs):
            put_new(conn, new_index, dict(doc, index=new_index))
    assert first_bad(node) == 4


def test_entry_appended_without_the_key(node: Path) -> None:
    db = NodePaths(node).audit_db
    forged = dict(entry(db, 15), index=16)
    with raw(db) as conn:
        put_new(conn, 16, forged)
    result = verify(node)
    assert result.problem is not None and result.problem.index == 16
    assert "no signed checkpoint" in result.problem.reason


def test_swapped_entries(node: Path) -> None:
    db = NodePaths(node).audit_db
    a, b = entry(db, 3), entry(db, 9)
    with raw(db) as conn:
        put(conn, 3, b)
        put(conn, 9, a)
    assert first_bad(node) == 3


def test_swapped_entries_with_fixed_up_indexes(node: Path) -> None:
    db = NodePaths(node).audit_db
    a, b = entry(db, 3), entry(db, 9)
    with raw(db) as conn:
        put(conn, 3, dict(b, index=3))
        put(conn, 9, dict(a, index=9))
    assert first_bad(node) == 3


def test_truncated_tail(node: Path) -> None:
    with raw(NodePaths(node).audit_db) as conn:
        conn.execute("DELETE FROM entries WHERE idx >= 12")
    result = verify(node)
    assert result.problem is not None and result.problem.index == 12
    assert "truncated" in result.problem.reason


def test_deleted_checkpoint(node: Path) -> None:
    with raw(NodePaths(node).audit_db) as conn:
        conn.execute("DELETE FROM checkpoints WHERE size = 11")
    assert first_bad(node) == 10


def test_forged_checkpoint_signature(node: Path) -> None:
    with raw(NodePaths(node).audit_db) as conn:
        conn.execute("UPDATE checkpoints SET signature = zeroblob(64) WHERE size = 6")
    assert first_bad(node) == 5


def test_replaced_signing_key(node: Path) -> None:
    paths = NodePaths(node)
    for path in (paths.signing_key, paths.public_key):
        path.unlink()
    with pytest.raises(SigningKeyMismatch):
        open_log(node, SteppingClock())  # creates a fresh key, then refuses the log
    result = verify(node)
    assert result.problem is not None and result.problem.index == 0
    assert "not the trusted key" in result.problem.reason


def test_full_rewrite_with_a_new_key_is_caught_by_the_pinned_key(node: Path, tmp_path: Path) -> None:
    """An attacker holding the file edits entry 7 and re-signs every checkpoint with a key
    of their own, replacing the key files. Only an anchor outside the node catches this: the
    public key the officer pinned at enrolment."""
    paths = NodePaths(node)
    pinned = tmp_path / "pinned.pub"
    shutil.copy(paths.public_key, pinned)
    forger = Ed25519PrivateKey.generate()
    db = paths.audit_db
    docs = [entry(db, i) for i in range(16)]
    docs[7]["detail"]["epsilon"] = 0.01
    with raw(db) as conn:
        conn.execute("DELETE FROM entries")
        conn.execute("DELETE FROM checkpoints")
        tree = MerkleTree()
        for i, doc in enumerate(docs):
            put_new(conn, i, doc)
            from healthfed_common.canonical_json import canonical_json

            tree.append_entry(canonical_json(doc))
            cp = sign_checkpoint(forger, ORIGIN, tree.size, tree.root(), SteppingClock()())
            conn.execute(
                "INSERT INTO checkpoints(size, origin, root_hash, timestamp, signature, "
                "public_key) VALUES (?, ?, ?, ?, ?, ?)",
                (cp.size, cp.origin, cp.root_hash, cp.timestamp, cp.signature, cp.public_key),
            )
    from cryptography.hazmat.primitives import serialization

    paths.public_key.write_bytes(
        forger.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    assert verify(node).ok  # against the node's own (replaced) key: internally consistent
    assert load_public_key(pinned) != load_public_key(paths.public_key)
    result = verify(node, pinned)
    assert result.problem is not None and result.problem.index == 0


def test_open_refuses_to_append_to_a_tampered_log(node: Path) -> None:
    with raw(NodePaths(node).audit_db) as conn:
        conn.execute("DELETE FROM entries WHERE idx >= 14")
    with pytest.raises(LogIntegrityError) as caught:
        open_log(node, SteppingClock())
    assert caught.value.index == 14


def test_triggers_stop_accidental_rewrites(node: Path) -> None:
    import sqlite3

    conn = sqlite3.connect(NodePaths(node).audit_db)
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM entries WHERE idx = 3")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE checkpoints SET size = 0")
    conn.close()


def put_new(conn, index: int, document: dict) -> None:  # type: ignore[no-untyped-def]
    from healthfed_common.canonical_json import canonical_json

    conn.execute("INSERT INTO entries(idx, entry) VALUES (?, ?)", (index, canonical_json(document)))
