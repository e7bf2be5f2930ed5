"""The data-layer CLI end to end against a real state folder (in-process main())."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from silo_node.approvals import PlanApprovals
from silo_node.cli.main import main
from silo_node.egress import EgressRecord
from silo_node.policy import ApprovalPolicy
from silo_node.datasets.policy import DatasetPolicy
from silo_node.storage import open_silo_db

from .exports import HEART_POLICY, IDENTIFIER_POLICY, heart_csv, identifier_frame, write_csv
from .plans import make_plan


def test_data_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    monkeypatch.setenv("HEALTHFED_SILO_STATE", str(state))
    export = write_csv(identifier_frame(), tmp_path / "ids.csv")
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(IDENTIFIER_POLICY))
    assert main(["data", "add", "ids", str(export), "--kind", "tabular"]) == 1
    err = capsys.readouterr().err
    assert "IDENTIFIER_NOT_HANDLED" in err and "ssn" in err
    assert main(["data", "add", "ids", str(export), "--kind", "tabular", "--policy", str(policy)]) == 0
    out = capsys.readouterr().out
    assert "dropped     ssn" in out and "generalised zip" in out
    assert main(["data", "list", "--state-dir", str(state)]) == 0
    assert "ids" in capsys.readouterr().out
    assert main(["data", "show", "ids"]) == 0
    assert "Ingestion report" in capsys.readouterr().out
    assert main(["data", "show", "nope"]) == 1
    assert main(["data", "remove", "ids"]) == 0
    assert main(["data", "list"]) == 0
    assert "no datasets" in capsys.readouterr().out


def test_plans_and_egress_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    conn = open_silo_db(state / "silo.sqlite3")
    plan = make_plan()
    PlanApprovals(conn, ApprovalPolicy()).consider(plan, DatasetPolicy.from_document(HEART_POLICY))
    EgressRecord(conn).record(plan.plan_hash, 1, "masked_update", b"x" * 100, "aggregator")
    args = ["--state-dir", str(state)]
    assert main(["plans", "list", *args]) == 0
    assert "pending" in capsys.readouterr().out
    assert main(["plans", "show", plan.plan_hash[:10], *args]) == 0
    assert "What leaves this silo" in capsys.readouterr().out
    assert main(["plans", "approve", plan.plan_hash[:10], "--by", "dr.x", *args]) == 0
    assert main(["plans", "list", *args]) == 0
    assert "approved" in capsys.readouterr().out
    assert main(["plans", "reject", plan.plan_hash, "--reason", "changed our mind", *args]) == 0
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
