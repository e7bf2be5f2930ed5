"""The aggregator's witness store: accepts only signed, growing, consistent checkpoints, and
lets `verify` catch rewrites that the node's own file cannot reveal."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from compliance_support import SteppingClock, open_log, populate
from compliance_tamper import raw
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from compliance.checkpoints import SignedCheckpoint, sign_checkpoint
from compliance.errors import CheckpointRejected, MalformedCheckpoint
from compliance.node_dir import NodePaths, trusted_public_key
from compliance.verify import verify_log
from compliance.witness import WitnessStore, read_witnessed


def test_checkpoints_round_trip_through_dict(node: Path) -> None:
    with open_log(node) as log:
        cp = log.sign_checkpoint()
    again = SignedCheckpoint.from_dict(cp.to_dict())
    assert again == cp
    again.verify(cp.public_key)
    with pytest.raises(MalformedCheckpoint, match="root_hash"):
        SignedCheckpoint.from_dict(dict(cp.to_dict(), root_hash="xyz"))
    with pytest.raises(MalformedCheckpoint, match="unexpected"):
        SignedCheckpoint.from_dict(dict(cp.to_dict(), extra=1))


def test_witness_accepts_a_growing_log_and_rejects_the_rest(tmp_path: Path) -> None:
    silo = tmp_path / "silo"
    store = WitnessStore.open(tmp_path / "agg" / "audit" / "witness.sqlite3")
    with open_log(silo, SteppingClock()) as log:
        key = log.public_key
        first = log.sign_checkpoint()  # the empty log
        store.accept(first, [], key)
        populate(log, rounds=1)
        second = log.sign_checkpoint()
        store.accept(second, log.consistency_proof(first.size, second.size), key)
        store.accept(second, [], key)  # re-presenting the same head is fine
        log.record("round.joined", actor="silo:st-marys", detail={"plan_hash": "p", "round": 2})
        third = log.sign_checkpoint()
        proof = log.consistency_proof(second.size, third.size)

        stranger = Ed25519PrivateKey.generate()
        forged = sign_checkpoint(stranger, third.origin, third.size, third.root,
                                 SteppingClock()())
        with pytest.raises(CheckpointRejected, match="trusted key"):
            store.accept(forged, proof, key)
        from compliance.signing import public_bytes

        with pytest.raises(CheckpointRejected, match="witnessed under key"):
            store.accept(forged, proof, public_bytes(stranger))
        with pytest.raises(CheckpointRejected, match="not consistent"):
            store.accept(third, proof[:-1], key)
        with pytest.raises(CheckpointRejected, match="not consistent"):
            store.accept(third, [], key)
        store.accept(third, proof, key)
        with pytest.raises(CheckpointRejected, match="shrank"):
            store.accept(second, [], key)
    assert [c.size for c in store.checkpoints("silo:st-marys")] == [0, 10, 10, 11]
    assert store.origins() == ["silo:st-marys"]
    latest = store.latest("silo:st-marys")
    assert latest is not None and latest.size == 11
    store.close()


def _witnessed_node(tmp_path: Path) -> tuple[Path, Path]:
    """A silo that handed its checkpoint to the aggregator after every round."""
    silo, witness_db = tmp_path / "silo", tmp_path / "agg" / "audit" / "witness.sqlite3"
    with WitnessStore.open(witness_db) as store, open_log(silo, SteppingClock()) as log:
        last = 0
        for _ in range(2):
            populate(log, rounds=1)
            cp = log.sign_checkpoint()
            store.accept(cp, log.consistency_proof(last, cp.size), log.public_key)
            last = cp.size
        log.record("plan.received", actor="aggregator", requestor=False)
    return silo, witness_db


def test_witness_catches_a_tail_cut_with_its_checkpoints(tmp_path: Path) -> None:
    """Deleting the last entries together with their checkpoints leaves a file that is
    consistent on its own; the aggregator's copy of the checkpoint shows the cut."""
    silo, witness_db = _witnessed_node(tmp_path)
    paths = NodePaths(silo)
    with raw(paths.audit_db) as conn:
        conn.execute("DELETE FROM entries WHERE idx >= 15")
        conn.execute("DELETE FROM checkpoints WHERE size > 15")
    key, _ = trusted_public_key(None, paths)
    assert verify_log(paths.audit_db, key).ok  # the limit of local evidence
    result = verify_log(paths.audit_db, key, read_witnessed(witness_db, "silo:st-marys"))
    assert result.problem is not None and result.problem.index == 15
    assert "removed" in result.problem.reason


def test_witness_catches_a_rewrite_signed_with_a_new_key(tmp_path: Path) -> None:
    silo, witness_db = _witnessed_node(tmp_path)
    paths = NodePaths(silo)
    shutil.rmtree(paths.root / "audit")
    # The attacker rebuilds a plausible history under a fresh key.
    with open_log(silo, SteppingClock()) as log:
        populate(log, rounds=2)
    key, _ = trusted_public_key(None, paths)
    assert verify_log(paths.audit_db, key).ok
    result = verify_log(paths.audit_db, key, read_witnessed(witness_db, "silo:st-marys"))
    assert result.problem is not None and result.problem.index == 0
    assert "key replaced" in result.problem.reason


def test_witness_catches_a_rewrite_under_the_same_key(tmp_path: Path) -> None:
    silo, witness_db = _witnessed_node(tmp_path)
    paths = NodePaths(silo)
    saved_key = paths.signing_key.read_bytes()
    shutil.rmtree(paths.root / "audit")
    paths.signing_key.parent.mkdir(parents=True)
    paths.signing_key.write_bytes(saved_key)
    paths.signing_key.chmod(0o600)
    with open_log(silo, SteppingClock()) as log:
        populate(log, rounds=1)
        log.record("plan.rejected", actor="steward:alice")  # history differs from entry 10 on
        populate(log, rounds=1)
    key, _ = trusted_public_key(None, paths)
    assert verify_log(paths.audit_db, key).ok
    result = verify_log(paths.audit_db, key, read_witnessed(witness_db, "silo:st-marys"))
    assert result.problem is not None and result.problem.index == 10
    assert result.witness_checkpoints_checked == 1
