"""AuditLog behaviour through its public API, on real files."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from compliance_support import ORIGIN, SteppingClock, charge, open_log

from compliance.audit_log import AuditLog
from compliance.errors import (
    ComplianceError,
    InvalidEvent,
    KeyFileError,
    OriginMismatch,
    UnknownEventKind,
)
from compliance.events import EVENT_KINDS
from compliance.log_store import read_raw_log
from compliance.merkle import leaf_hash, verify_consistency, verify_inclusion
from compliance.node_dir import NodePaths

REQUIRED_KINDS = {
    "certificate.issued", "certificate.revoked", "connection.refused", "plan.received",
    "plan.approved", "plan.rejected", "plan.expired", "dataset.registered", "dataset.removed",
    "dataset.deidentified", "round.joined", "round.refused", "round.completed", "dp.charge",
    "payload.released", "checkpoint.signed", "checkpoint.witnessed", "report.exported",
    "configuration.changed", "model.exported",
}


def test_vocabulary_covers_the_issue_and_maps_to_fhir_codes() -> None:
    assert REQUIRED_KINDS <= set(EVENT_KINDS)
    for kind in EVENT_KINDS.values():
        assert kind.action in {"C", "R", "U", "D", "E"}
        assert kind.type.code.startswith("110")  # DICOM audit event IDs
        assert kind.subtypes[-1].code == kind.name


def test_key_is_created_owner_only_and_pub_published(tmp_path: Path) -> None:
    with open_log(tmp_path / "n") as log:
        assert log.size == 0
    paths = NodePaths(tmp_path / "n")
    assert stat.S_IMODE(os.stat(paths.signing_key).st_mode) == 0o600
    assert b"BEGIN PUBLIC KEY" in paths.public_key.read_bytes()


def test_loose_key_permissions_are_refused(tmp_path: Path) -> None:
    open_log(tmp_path / "n").close()
    NodePaths(tmp_path / "n").signing_key.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        open_log(tmp_path / "n")


def test_record_returns_indexes_and_proofs_verify(tmp_path: Path) -> None:
    with open_log(tmp_path / "n", SteppingClock()) as log:
        first = log.sign_checkpoint()
        indexes = [log.record("plan.received", actor="aggregator", requestor=False,
                              entities={"plan": f"p{i}"}) for i in range(5)]
        assert indexes == [0, 1, 2, 3, 4]
        cp = log.sign_checkpoint()
        cp.verify(log.public_key)
        assert cp.size == 5 and cp.origin == ORIGIN
        verify_consistency(first.size, cp.size, first.root, cp.root,
                           log.consistency_proof(first.size, cp.size))
        verify_consistency(2, 5, log.root(2), cp.root, log.consistency_proof(2, 5))
        stored = read_raw_log(log.db_path).entries
        verify_inclusion(leaf_hash(stored[3][1]), 3, 5, log.inclusion_proof(3), cp.root)


def test_bad_events_are_refused_before_touching_the_log(tmp_path: Path) -> None:
    with open_log(tmp_path / "n") as log:
        with pytest.raises(UnknownEventKind, match="plan.recieved"):
            log.record("plan.recieved", actor="aggregator")
        with pytest.raises(InvalidEvent, match="outcome"):
            log.record("plan.received", actor="aggregator", outcome="fine")
        with pytest.raises(InvalidEvent, match="actor"):
            log.record("plan.received", actor="")
        with pytest.raises(InvalidEvent, match="entities.when"):
            log.record("plan.received", actor="a", entities={"when": object()})  # type: ignore[dict-item]
        with pytest.raises(InvalidEvent, match="detail.epsilon"):
            bad = dict(charge("icu", 1, 0.5, 0.5), epsilon="lots")
            log.record("dp.charge", actor="silo", detail=bad)
        with pytest.raises(InvalidEvent, match="canonical"):
            log.record("plan.received", actor="a", detail={"x": float("nan")})
        with pytest.raises(InvalidEvent, match="detail.sha256"):
            log.record("payload.released", actor="silo", detail={
                "plan_hash": "p", "round": 1, "kind": "metrics", "bytes": 10,
                "sha256": "nothex", "recipient": "aggregator"})
        assert log.size == 0
    assert read_raw_log(NodePaths(tmp_path / "n").audit_db).entries == []
    assert issubclass(UnknownEventKind, LookupError) and issubclass(InvalidEvent, ValueError)
    assert issubclass(UnknownEventKind, ComplianceError)


def test_a_log_belongs_to_one_origin(tmp_path: Path) -> None:
    open_log(tmp_path / "n").close()
    with pytest.raises(OriginMismatch, match="silo:st-marys"):
        open_log(tmp_path / "n", origin="aggregator")


def test_two_handles_append_to_one_log(tmp_path: Path) -> None:
    """E.g. the silo's poller and its steward UI in separate processes."""
    a = open_log(tmp_path / "n", SteppingClock())
    b = open_log(tmp_path / "n", SteppingClock())
    assert a.record("plan.received", actor="aggregator") == 0
    assert b.record("plan.approved", actor="steward:alice") == 1
    assert a.record("round.joined", actor="silo", detail={"plan_hash": "p", "round": 1}) == 2
    assert a.root() == b.root()
    assert b.size == 3
    a.close()
    b.close()
    from compliance.node_dir import trusted_public_key
    from compliance.verify import verify_log

    key, _ = trusted_public_key(None, NodePaths(tmp_path / "n"))
    assert verify_log(NodePaths(tmp_path / "n").audit_db, key).ok


def test_importing_compliance_has_no_side_effects(tmp_path: Path) -> None:
    code = (
        "import sys, os; before = set(os.listdir('.'));"
        "import compliance, compliance.audit_log, compliance.verify, compliance.witness,"
        " compliance.export, compliance.cli.main, compliance.report.data;"
        "assert 'tensorflow' not in sys.modules and 'tensorflow_federated' not in sys.modules;"
        "assert 'matplotlib' not in sys.modules and 'reportlab' not in sys.modules;"
        "assert set(os.listdir('.')) == before"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2]))
    completed = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                               capture_output=True, text=True, check=False)
    assert completed.returncode == 0, completed.stderr


def test_audit_log_public_api_is_stable() -> None:
    import inspect

    params = inspect.signature(AuditLog.record).parameters
    assert list(params) == ["self", "kind", "actor", "outcome", "requestor", "entities", "detail"]
    assert all(params[n].kind is inspect.Parameter.KEYWORD_ONLY
               for n in ("actor", "outcome", "requestor", "entities", "detail"))
    assert list(inspect.signature(AuditLog.open).parameters)[:3] == ["db_path", "key_path", "origin"]
    for name in ("sign_checkpoint", "consistency_proof", "close"):
        assert callable(getattr(AuditLog, name))
