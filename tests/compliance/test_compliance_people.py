"""Every human action is an audit event naming the person (issue 13, item 1), on a silo
whose state folder was NOT created from a kit and on the aggregator: registering and
removing a dataset, approving and rejecting a plan, revoking a certificate, verifying a log
and exporting a report. Each command runs through its real CLI entry point and the events
are read back from the node's real audit log file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from compliance.cli.main import main as compliance
from compliance.entry import AuditEntry
from compliance.log_store import read_raw_log
from compliance_support import write_processing_record


@pytest.fixture(autouse=True)
def _no_operator_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEALTHFED_OPERATOR", raising=False)


def events(state: Path) -> list[AuditEntry]:
    return [AuditEntry.from_bytes(data) for _, data in read_raw_log(state / "audit" / "audit.sqlite3").entries]


def test_silo_actions_name_the_person_on_a_folder_made_without_a_kit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from silo_node.approvals import PlanApprovals
    from silo_node.cli.main import main as silo
    from silo_node.datasets.policy import DatasetPolicy
    from silo_node.policy import ApprovalPolicy
    from silo_node.storage import open_silo_db
    from tests.silo_data.exports import HEART_POLICY, IDENTIFIER_POLICY, identifier_frame, write_csv
    from tests.silo_data.plans import make_plan

    state = tmp_path / "hand-made-state"
    kit = tmp_path / "kit" / "silo.yaml"
    kit.parent.mkdir()
    kit.write_text(yaml.safe_dump({
        "silo_id": "st-marys", "federation": "cardiology", "aggregator_address": "127.0.0.1:1",
        "tls": {"ca_certificate": "ca.pem", "certificate": "silo.pem", "private_key": "silo.key"},
    }))
    export = write_csv(identifier_frame(), tmp_path / "ids.csv")
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(IDENTIFIER_POLICY))
    where = ["--state-dir", str(state)]
    add = ["data", "add", "ids", str(export), "--kind", "tabular", "--policy", str(policy), *where]
    assert silo([*add, "--by", "Ian T. Admin"]) == 1  # refused: nothing could record it
    assert "NO_AUDIT_LOG" in capsys.readouterr().err and not (state / "audit").exists()
    assert silo([*add, "--by", "Ian T. Admin", "--config", str(kit)]) == 0
    plan = make_plan()
    other = make_plan(name="second-look")
    conn = open_silo_db(state / "silo.sqlite3")
    for received in (plan, other):
        PlanApprovals(conn, ApprovalPolicy()).consider(received, DatasetPolicy.from_document(HEART_POLICY))
    conn.close()
    assert silo(["plans", "approve", plan.plan_hash[:12], "--by", "Dr. A. Jones", *where]) == 0
    assert silo(["plans", "reject", other.plan_hash[:12], "--by", "Dr. B. Smith", "--reason", "duplicate", *where]) == 0
    assert silo(["data", "remove", "ids", "--by", "Ian T. Admin", *where]) == 0
    write_processing_record(state)
    assert compliance(["verify", "--node", str(state), "--by", "Olga Officer"]) == 0
    assert compliance(["export", "--node", str(state), "--from", "2020-01-01", "--to", "2099-12-31",
                       "--format", "csv", "--out", str(tmp_path / "r.csv"), "--by", "Olga Officer"]) == 0

    people = [(e.kind, e.actor) for e in events(state) if e.actor.startswith("person:")]
    assert people == [
        ("dataset.deidentified", "person:Ian T. Admin"), ("dataset.registered", "person:Ian T. Admin"),
        ("plan.approved", "person:Dr. A. Jones"), ("plan.rejected", "person:Dr. B. Smith"),
        ("dataset.removed", "person:Ian T. Admin"),
        ("audit.verified", "person:Olga Officer"), ("report.exported", "person:Olga Officer"),
    ]
    assert {e.source for e in events(state)} == {"silo:st-marys"}
    approved = next(e for e in events(state) if e.kind == "plan.approved").detail
    assert approved["name"] == "heart-lr" and approved["epsilon"] == 3.0 and "expires_at" in approved


def test_aggregator_revoke_names_the_person(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from aggregator.cli.main import main as aggregator
    from aggregator.provisioning import provision_federation

    federation = provision_federation(tmp_path / "fed", "cardiology", ["north"], "127.0.0.1:1")
    state = federation.aggregator_dir / "state"
    # any certificate of the federation will do to exercise the command's audit trail
    revoke = ["revoke", "north", "--config", str(federation.aggregator_config),
              "--certificate", str(federation.aggregator_dir / "server.pem"), "--reason", "left the federation"]
    before = len(events(state))
    assert aggregator(revoke) == 1
    assert "OPERATOR_REQUIRED" in capsys.readouterr().err
    assert len(events(state)) == before  # refused before anything changed
    assert aggregator([*revoke, "--by", "Coordinator C. Lee"]) == 0
    revoked = events(state)[-1]
    assert (revoked.kind, revoked.actor, revoked.source) == ("certificate.revoked", "person:Coordinator C. Lee", "aggregator")
    assert revoked.detail["reason"] == "left the federation" and revoked.detail["silo"] == "north"
