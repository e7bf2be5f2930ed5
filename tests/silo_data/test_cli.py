"""The data-layer CLI end to end against a real state folder (in-process main())."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from compliance.entry import AuditEntry
from compliance.log_store import read_raw_log
from silo_node.approvals import PlanApprovals
from silo_node.cli.main import main
from silo_node.egress import EgressRecord
from silo_node.policy import ApprovalPolicy
from silo_node.datasets.policy import DatasetPolicy
from silo_node.storage import open_silo_db

from .exports import HEART_POLICY, IDENTIFIER_POLICY, heart_csv, identifier_frame, write_csv
from .plans import make_plan


@pytest.fixture(autouse=True)
def _no_operator_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HEALTHFED_OPERATOR", raising=False)


def kit_config(tmp_path: Path, silo_id: str = "north") -> Path:
    """A silo.yaml as `aggregator provision` writes it (only its identity matters here)."""
    path = tmp_path / "kit" / "silo.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({
        "silo_id": silo_id, "federation": "cardiology", "aggregator_address": "127.0.0.1:1",
        "tls": {"ca_certificate": "ca.pem", "certificate": "silo.pem", "private_key": "silo.key"},
        "state_dir": "state",
    }))
    return path


def audit_entries(state: Path) -> list[AuditEntry]:
    return [AuditEntry.from_bytes(data) for _, data in read_raw_log(state / "audit" / "audit.sqlite3").entries]


def test_data_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    monkeypatch.setenv("HEALTHFED_SILO_STATE", str(state))
    export = write_csv(identifier_frame(), tmp_path / "ids.csv")
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(IDENTIFIER_POLICY))
    by = ["--by", "IT Admin", "--config", str(kit_config(tmp_path))]
    assert main(["data", "add", "ids", str(export), "--kind", "tabular", *by]) == 1
    err = capsys.readouterr().err
    assert "IDENTIFIER_NOT_HANDLED" in err and "ssn" in err
    assert main(["data", "add", "ids", str(export), "--kind", "tabular", "--policy", str(policy), "--by", "IT Admin"]) == 0
    out = capsys.readouterr().out
    assert "dropped     ssn" in out and "generalised zip" in out
    assert main(["data", "list", "--state-dir", str(state)]) == 0
    assert "ids" in capsys.readouterr().out
    assert main(["data", "show", "ids"]) == 0
    assert "Ingestion report" in capsys.readouterr().out
    assert main(["data", "show", "nope"]) == 1
    assert main(["data", "remove", "ids", "--by", "IT Admin"]) == 0
    assert main(["data", "list"]) == 0
    assert "no datasets" in capsys.readouterr().out


def test_plans_and_egress_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    conn = open_silo_db(state / "silo.sqlite3")
    plan = make_plan()
    PlanApprovals(conn, ApprovalPolicy()).consider(plan, DatasetPolicy.from_document(HEART_POLICY))
    EgressRecord(conn).record(plan.plan_hash, 1, "masked_update", b"x" * 100, "aggregator")
    args = ["--state-dir", str(state)]
    assert main(["plans", "approve", plan.plan_hash[:10], "--by", "dr.x", *args]) == 1
    assert "NO_AUDIT_LOG" in capsys.readouterr().err  # a folder made without a kit: refused, not silent
    assert main(["plans", "list", *args]) == 0
    assert "pending" in capsys.readouterr().out
    assert main(["plans", "show", plan.plan_hash[:10], *args]) == 0
    shown = capsys.readouterr().out
    assert "What leaves this silo" in shown
    assert "Privacy statement" in shown and "replace-one" in shown and "Hyper-parameter tuning" in shown
    assert main(["plans", "approve", plan.plan_hash[:10], "--by", "dr.x", "--config", str(kit_config(tmp_path)), *args]) == 0
    assert main(["plans", "list", *args]) == 0
    assert "approved" in capsys.readouterr().out
    assert main(["plans", "reject", plan.plan_hash, "--reason", "changed our mind", "--by", "dr.y", *args]) == 0
    decisions = [(e.kind, e.actor) for e in audit_entries(state) if e.kind.startswith("plan.")]
    assert decisions == [("plan.approved", "person:dr.x"), ("plan.rejected", "person:dr.y")]
    assert main(["egress", *args]) == 0
    out = capsys.readouterr().out
    assert "masked_update" in out and "100 bytes" in out


@pytest.mark.parametrize("command", [["data", "add"], ["data", "list"], ["data", "show"], ["data", "remove"],
                                     ["plans", "list"], ["plans", "approve"], ["plans", "reject"], ["egress"]])
def test_every_subcommand_has_help_with_state_dir(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([*command, "--help"])
    assert exit_.value.code == 0
    assert "--state-dir" in capsys.readouterr().out


def test_a_state_folder_without_a_kit_refuses_then_audits_after_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`data add` on a folder made without a kit used to register the dataset and write no
    audit log at all. Now it refuses (nothing stored) until --config binds the folder to its
    silo once; from then on every add/remove names the person, the policy hash and what
    de-identification dropped or generalised."""
    state = tmp_path / "bare-state"
    export = write_csv(identifier_frame(), tmp_path / "ids.csv")
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(IDENTIFIER_POLICY))
    add = ["data", "add", "ids", str(export), "--kind", "tabular", "--policy", str(policy), "--state-dir", str(state)]
    assert main([*add, "--by", "IT Admin"]) == 1
    err = capsys.readouterr().err
    assert "NO_AUDIT_LOG" in err and "--config silo.yaml" in err
    assert main(["data", "list", "--state-dir", str(state)]) == 0
    assert "no datasets" in capsys.readouterr().out  # nothing was stored
    assert main(add) == 1
    assert "OPERATOR_REQUIRED" in capsys.readouterr().err
    assert main([*add, "--by", "IT Admin", "--config", str(kit_config(tmp_path, "south"))]) == 0
    capsys.readouterr()
    assert main(["data", "remove", "ids", "--state-dir", str(state), "--by", "IT Admin"]) == 0
    assert main(["data", "add", "x", str(export), "--kind", "tabular", "--state-dir", str(state), "--by", "B",
                 "--config", str(kit_config(tmp_path / "other", "west"))]) == 1
    assert "NODE_CONFIG_INVALID" in capsys.readouterr().err  # a folder cannot change silo
    entries = audit_entries(state)
    assert {e.source for e in entries} == {"silo:south"}
    registered = next(e for e in entries if e.kind == "dataset.registered")
    removed = next(e for e in entries if e.kind == "dataset.removed")
    deidentified = next(e for e in entries if e.kind == "dataset.deidentified")
    assert registered.actor == removed.actor == deidentified.actor == "person:IT Admin"
    from silo_node.datasets.registry import policy_digest

    digest = policy_digest(DatasetPolicy.from_document(IDENTIFIER_POLICY))
    assert registered.detail["policy_sha256"] == removed.detail["policy_sha256"] == digest
    assert "ssn" in registered.detail["dropped"] and "zip" in registered.detail["generalised"]
    assert "ssn" in deidentified.detail["dropped"]


def test_data_add_with_only_the_kit_registers_where_silo_node_run_will_look(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's first-hour dead end: `data add ... --config kit/silo.yaml` without
    --state-dir used to register into ./silo-state, so `silo-node run --config kit/silo.yaml`
    (which serves the kit's state_dir) never saw the dataset."""
    monkeypatch.delenv("HEALTHFED_SILO_STATE", raising=False)
    monkeypatch.chdir(tmp_path)
    export = write_csv(identifier_frame(), tmp_path / "ids.csv")
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(IDENTIFIER_POLICY))
    config = kit_config(tmp_path)
    assert main(["data", "add", "ids", str(export), "--kind", "tabular", "--policy", str(policy),
                 "--by", "IT Admin", "--config", str(config)]) == 0
    kit_state = tmp_path / "kit" / "state"  # silo.yaml's state_dir, relative to the kit
    assert (kit_state / "silo.sqlite3").exists() and not (tmp_path / "silo-state").exists()
    capsys.readouterr()
    assert main(["data", "list", "--state-dir", str(kit_state)]) == 0
    assert "ids" in capsys.readouterr().out
    # an explicit --state-dir still wins over the kit's
    other = tmp_path / "elsewhere"
    assert main(["data", "add", "ids2", str(export), "--kind", "tabular", "--policy", str(policy),
                 "--by", "IT Admin", "--config", str(config), "--state-dir", str(other)]) == 0
    assert (other / "silo.sqlite3").exists()
