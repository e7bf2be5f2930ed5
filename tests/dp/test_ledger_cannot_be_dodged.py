"""Issue 12 item 5: a privacy ledger nothing can dodge.

Each test mounts the dodge the review found and checks the ledger refuses it: a non-private
plan charged as epsilon = infinity, budget rewrites (delta raised after the fact, epsilon set
below what is spent, changes that are not audited or half-committed), and re-registering the
same export under a new name to get a fresh budget. No TensorFlow here.
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
from pathlib import Path
from typing import Any

import dp_accounting
import numpy as np
import pandas as pd
import pytest

from compliance.audit_log import AuditLog
from compliance.entry import AuditEntry
from compliance.event_details import parse_detail
from healthfed_common.dp.accounting import SamplingSchedule, epsilon_for_events, round_event
from silo_node.datasets.policy import DatasetPolicy
from silo_node.datasets.registry import DatasetRegistry
from silo_node.privacy_ledger import (
    BudgetBelowSpent,
    BudgetDeltaLocked,
    BudgetExceeded,
    EvaluationLimitReached,
    PrivacyLedger,
)
from silo_node.storage import open_silo_db

EVENT = round_event(SamplingSchedule(199, 16, 1), 1.5)
POLICY = {"features": {"age": {"transforms": ["identity"]}, "sex": {"transforms": ["identity"]}}, "label": "outcome"}


_AUDIT_DB: list[sqlite3.Connection] = []


def _audit_log(tmp_path: Path, origin: str = "silo:test") -> AuditLog:
    log = AuditLog.open(tmp_path / "audit" / "audit.sqlite3", tmp_path / "audit" / "signing.key", origin=origin)
    _AUDIT_DB[:] = [sqlite3.connect(tmp_path / "audit" / "audit.sqlite3")]
    return log


def _entries(log: AuditLog, kind: str) -> list[AuditEntry]:
    """The log's entries of one kind, read back from its database as a verifier would."""
    del log  # the entries are read from the file, not from the writer's memory
    return [e for e in (AuditEntry.from_bytes(bytes(row[0])) for row in _AUDIT_DB[0].execute(
        "SELECT entry FROM entries ORDER BY idx")) if e.kind == kind]


def _export(path: Path, n: int = 60, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    pd.DataFrame({"age": rng.integers(30, 80, n), "sex": rng.integers(0, 2, n),
                  "outcome": rng.integers(0, 2, n)}).to_csv(path, index=False)
    return path


# --- non-private plans: epsilon = infinity --------------------------------------------
def test_non_private_charge_is_infinite_and_blocks_every_later_dp_charge(tmp_path: Path) -> None:
    log = _audit_log(tmp_path)
    ledger = PrivacyLedger(open_silo_db(tmp_path / "silo.sqlite3"), audit=log, actor="silo:test")
    ledger.set_budget("heart", 10.0, 1e-5, actor="person:Dr. Steward")
    ledger.charge("heart", "dp-plan", 1, EVENT)
    first = ledger.charge_non_private("heart", "plain-plan", 1)
    again = ledger.charge_non_private("heart", "plain-plan", 1)  # a retry of the same round
    assert first.newly_charged and not again.newly_charged and first.non_private
    assert len(ledger.charges("heart")) == 2  # once per (plan, round)
    assert math.isinf(ledger.spent("heart")[0])
    assert ledger.remaining("heart")[0] == 0.0
    for accountant in ("rdp", "pld"):
        assert math.isinf(ledger.spent("heart", accountant)[0])  # type: ignore[arg-type]
    with pytest.raises(BudgetExceeded) as refused:
        ledger.charge("heart", "dp-plan", 2, EVENT)
    assert "∞" in str(refused.value)
    # The audit entry survived canonical JSON and reads back as an infinite epsilon.
    charges = [e for e in _entries(log, "dp.charge") if e.outcome_name == "success"]
    detail = parse_detail("dp.charge", charges[-1].detail)
    assert detail is not None and math.isinf(detail.epsilon) and math.isinf(detail.epsilon_spent_total)  # type: ignore[attr-defined]
    log.close()


# --- budget changes ---------------------------------------------------------------------
def test_budget_changes_are_audited_with_the_person_and_old_and_new_values(tmp_path: Path) -> None:
    log = _audit_log(tmp_path)
    ledger = PrivacyLedger(open_silo_db(tmp_path / "silo.sqlite3"), audit=log, actor="silo:test")
    ledger.set_budget("heart", 3.0, 1e-5, actor="person:A. Jones")
    ledger.set_budget("heart", 5.0, 1e-5, actor="person:B. Smith")
    entries = _entries(log, "dp.budget_set")
    assert [e.actor for e in entries] == ["person:A. Jones", "person:B. Smith"]
    assert entries[1].detail["previous_epsilon_budget"] == 3.0 and entries[1].detail["epsilon_budget"] == 5.0
    assert entries[0].detail["previous_epsilon_budget"] is None
    log.close()


def test_raising_delta_after_a_charge_is_refused(tmp_path: Path) -> None:
    """The review's attack: raising delta lowered the spent epsilon from 0.100 to 0."""
    log = _audit_log(tmp_path)
    ledger = PrivacyLedger(open_silo_db(tmp_path / "silo.sqlite3"), audit=log, actor="silo:test")
    ledger.set_budget("heart", 5.0, 1e-5, actor="person:A. Jones")
    ledger.charge("heart", "plan-a", 1, EVENT)
    spent = ledger.spent("heart")[0]
    assert epsilon_for_events([EVENT], 0.5) < spent  # what the rewrite would have bought
    with pytest.raises(BudgetDeltaLocked) as locked:
        ledger.set_budget("heart", 5.0, 0.5, actor="person:Mallory")
    assert locked.value.code == "BUDGET_DELTA_LOCKED"
    with pytest.raises(BudgetDeltaLocked):
        ledger.set_budget("heart", 5.0, 1e-6, actor="person:Mallory")  # lowering changes it too
    assert ledger.budget("heart").delta == 1e-5 and ledger.spent("heart")[0] == spent
    refused = [e for e in _entries(log, "dp.budget_set") if e.outcome_name != "success"]
    assert [(e.actor, e.detail["code"]) for e in refused] == [("person:Mallory", "BUDGET_DELTA_LOCKED")] * 2
    ledger.set_budget("heart", 6.0, 1e-5, actor="person:A. Jones")  # epsilon may still grow
    log.close()


def test_epsilon_below_spent_is_refused_and_infinite_spending_freezes_the_budget(tmp_path: Path) -> None:
    ledger = PrivacyLedger(open_silo_db(tmp_path / "silo.sqlite3"))
    ledger.set_budget("heart", 5.0, 1e-5)
    ledger.charge("heart", "plan-a", 1, EVENT)
    spent = ledger.spent("heart")[0]
    with pytest.raises(BudgetBelowSpent) as below:
        ledger.set_budget("heart", spent / 2, 1e-5)
    assert below.value.code == "BUDGET_BELOW_SPENT"
    assert ledger.budget("heart").epsilon == 5.0
    ledger.charge_non_private("heart", "plain-plan", 1)
    with pytest.raises(BudgetBelowSpent):
        ledger.set_budget("heart", 1e9, 1e-5)


class FailingAudit:
    def record(self, kind: str, **_: Any) -> None:
        raise OSError("audit disk full")


def test_a_failing_audit_append_leaves_the_budget_unchanged(tmp_path: Path) -> None:
    """Before: the budget was committed and then the audit append raised."""
    db = tmp_path / "silo.sqlite3"
    PrivacyLedger(open_silo_db(db)).set_budget("heart", 3.0, 1e-5)
    with pytest.raises(OSError):
        PrivacyLedger(open_silo_db(db), audit=FailingAudit()).set_budget("heart", 9.0, 1e-5, actor="person:X")
    assert PrivacyLedger(open_silo_db(db)).budget("heart").epsilon == 3.0
    with pytest.raises(OSError):  # and a charge whose audit entry cannot be written is not made
        PrivacyLedger(open_silo_db(db), audit=FailingAudit()).charge("heart", "plan-a", 1, EVENT)
    assert PrivacyLedger(open_silo_db(db)).charges("heart") == []


# --- same content, same ledger ----------------------------------------------------------
def test_same_export_under_a_new_name_shares_the_first_registrations_ledger(tmp_path: Path) -> None:
    conn = open_silo_db(tmp_path / "silo.sqlite3")
    registry = DatasetRegistry(conn, tmp_path / "datasets")
    policy = DatasetPolicy.from_document(POLICY)
    export = _export(tmp_path / "export.csv")
    registry.add("heart", export, "tabular", policy)
    ledger = PrivacyLedger(conn)
    ledger.set_budget("heart", 5.0, 1e-5)
    ledger.charge("heart", "plan-a", 1, EVENT)
    spent = ledger.spent("heart")[0]
    registry.add("heart_again", export, "tabular", policy)  # the same bytes, a new name
    assert ledger.unit_of("heart_again") == "heart"
    assert ledger.spent("heart_again")[0] == spent
    assert ledger.budget("heart_again").epsilon == 5.0
    # No fresh budget: setting one through the new name changes the shared one, under its rules.
    with pytest.raises(BudgetDeltaLocked):
        ledger.set_budget("heart_again", 2.0, 1e-3)
    with pytest.raises(BudgetBelowSpent):
        ledger.set_budget("heart_again", spent / 2, 1e-5)
    # Removing the first registration does not free the content's ledger.
    registry.remove("heart")
    registry.remove("heart_again")
    registry.add("heart_third", export, "tabular", policy)
    assert PrivacyLedger(conn).spent("heart_third")[0] == spent
    # Other content is its own unit.
    registry.add("other", _export(tmp_path / "other.csv", seed=1), "tabular", policy)
    assert ledger.unit_of("other") == "other"


def test_cli_set_budget_names_the_person_and_show_prints_infinity(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from silo_node.cli import ledger as ledger_cli
    from silo_node.node import IDENTITY_FILE

    monkeypatch.delenv("HEALTHFED_OPERATOR", raising=False)
    parser = argparse.ArgumentParser()
    ledger_cli.register(parser.add_subparsers(dest="command"))
    state = tmp_path / "state"
    state.mkdir()
    (state / IDENTITY_FILE).write_text("st-marys\n")

    def run(*argv: str) -> int:
        args = parser.parse_args(["ledger", "--state-dir", str(state), *argv])
        return int(args.func(args))

    assert run("set-budget", "heart", "--epsilon", "3", "--delta", "1e-5") == 1  # nobody named
    assert "OPERATOR_REQUIRED" in capsys.readouterr().err
    assert run("set-budget", "heart", "--epsilon", "3", "--delta", "1e-5", "--by", "Dr. A. Jones") == 0
    PrivacyLedger(open_silo_db(state / "silo.sqlite3")).charge_non_private("heart", "plain", 1)
    assert run("set-budget", "heart", "--epsilon", "3", "--delta", "1e-3", "--by", "Mallory") == 1
    assert "BUDGET_DELTA_LOCKED" in capsys.readouterr().err
    assert run("show") == 0
    out = capsys.readouterr().out
    assert "∞" in out and "non-private" in out
    assert run("show", "--json") == 0
    row = json.loads(capsys.readouterr().out)[0]
    assert row["epsilon_spent"] == "inf" and row["epsilon_remaining"] == 0.0 and row["non_private_rounds_charged"] == 1
    log = _audit_log(state, "silo:st-marys")
    assert [(e.actor, e.outcome_name) for e in _entries(log, "dp.budget_set")] == [
        ("person:Dr. A. Jones", "success"), ("person:Mallory", "minor_failure")]
    log.close()


# --- evaluations: counted, limited, disclosed -----------------------------------------
def test_evaluations_are_recorded_before_release_and_limited_per_plan(tmp_path: Path) -> None:
    ledger = PrivacyLedger(open_silo_db(tmp_path / "silo.sqlite3"))
    calls: list[int] = []

    def compute() -> dict[str, Any]:
        calls.append(1)
        return {"num_examples": 10, "metrics": {"accuracy": 0.7}}

    first = ledger.record_evaluation("heart", "plan-a", "a" * 64, 1, compute)
    retry = ledger.record_evaluation("heart", "plan-a", "a" * 64, 1, compute)
    assert first.newly_recorded and not retry.newly_recorded and retry.released == first.released
    with pytest.raises(EvaluationLimitReached) as limited:
        ledger.record_evaluation("heart", "plan-a", "b" * 64, 1, compute)
    assert limited.value.code == "EVALUATION_LIMIT_REACHED"
    assert len(calls) == 1  # refused before evaluating anything
    ledger.record_evaluation("heart", "plan-b", "b" * 64, 1, compute)  # another plan's own count
    assert [d.plan_hash for d in ledger.disclosures("heart")] == ["plan-a", "plan-b"]
    assert isinstance(dp_accounting.NonPrivateDpEvent(), dp_accounting.DpEvent)
