"""The ledger refuses over-budget rounds, charges once per round, survives SIGKILL, and
cannot be overspent by concurrent charges."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import dp_accounting
import pytest

from healthfed_common.dp.accounting import (
    ReplaceOneAccountant,
    SamplingSchedule,
    epsilon_for_events,
    event_to_json,
    round_event,
)
from silo_node.privacy_ledger import (
    BudgetExceeded,
    BudgetNotSet,
    ChargeConflict,
    PrivacyLedger,
    PrivacyLedgerError,
)
from silo_node.storage import open_silo_db

ROOT = Path(__file__).resolve().parents[2]
SCHEDULE = SamplingSchedule(199, 16, 1)
EVENT = round_event(SCHEDULE, 1.5)


class RecordingAudit:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def record(self, kind: str, *, actor: str, outcome: str = "success", entities: Any = None,
               detail: Any = None) -> None:
        self.records.append(dict(kind=kind, actor=actor, outcome=outcome, entities=entities, detail=detail))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "silo.sqlite3"


def _ledger(path: Path, audit: Any = None) -> PrivacyLedger:
    return PrivacyLedger(open_silo_db(path), audit=audit)


def _round_eps(k: int, accountant: str = "rdp") -> float:
    return epsilon_for_events([EVENT] * k, 1e-3, accountant)  # type: ignore[arg-type]


def test_spent_is_composition_equal_to_direct_dp_accounting(db_path: Path) -> None:
    for accountant in ("rdp", "pld"):
        ledger = _ledger(db_path)
        name = f"heart-{accountant}"
        ledger.set_budget(name, 100.0, 1e-3)
        for r in range(3):
            ledger.charge(name, "plan-a", r, EVENT, accountant)  # type: ignore[arg-type]
        direct_acct = dp_accounting.rdp.RdpAccountant() if accountant == "rdp" else dp_accounting.pld.PLDAccountant()
        # The ledger reports replace-one epsilon (n is public), chained from dp-accounting's
        # add/remove accountant (healthfed_common.dp.accounting.ReplaceOneAccountant).
        direct = ReplaceOneAccountant(direct_acct).compose(EVENT, 3).get_epsilon(1e-3)
        assert direct > direct_acct.get_epsilon(1e-3)
        spent, delta = ledger.spent(name)
        assert delta == 1e-3
        assert spent == pytest.approx(direct, rel=1e-6)
        assert spent < 3 * ledger.charges(name)[0].epsilon  # composed, not added
        assert ledger.remaining(name)[0] == pytest.approx(100.0 - spent, rel=1e-9)


def test_over_budget_round_is_refused_with_a_clear_reason(db_path: Path) -> None:
    audit = RecordingAudit()
    ledger = _ledger(db_path, audit)
    budget = (_round_eps(2) + _round_eps(3)) / 2  # room for exactly two rounds
    ledger.set_budget("heart", budget, 1e-3)
    ledger.charge("heart", "plan-a", 0, EVENT)
    ledger.charge("heart", "plan-a", 1, event_to_json(EVENT))  # JSON accepted too
    with pytest.raises(BudgetExceeded) as info:
        ledger.charge("heart", "plan-a", 2, EVENT)
    error = info.value
    assert isinstance(error, PermissionError) and isinstance(error, PrivacyLedgerError)
    assert error.code == "PRIVACY_BUDGET_EXCEEDED"
    assert "spent epsilon" in str(error) and "remaining" in str(error)
    assert error.epsilon_spent == pytest.approx(_round_eps(2), rel=1e-9)
    assert len(ledger.charges("heart")) == 2  # nothing written by the refusal
    assert [r["outcome"] for r in audit.records if r["kind"] == "dp.charge"] == ["success", "success", "minor_failure"]
    detail = audit.records[1]["detail"]
    assert set(detail) == {"dataset", "plan_hash", "round", "epsilon", "delta", "epsilon_spent_total",
                           "epsilon_budget", "delta_budget"}
    # A retry of a charged round still succeeds (it spends nothing).
    assert ledger.charge("heart", "plan-a", 1, EVENT).newly_charged is False


def test_retry_of_a_round_charges_once_and_a_different_event_is_a_conflict(db_path: Path) -> None:
    ledger = _ledger(db_path)
    ledger.set_budget("heart", 50.0, 1e-3)
    first = ledger.charge("heart", "plan-a", 7, EVENT)
    again = ledger.charge("heart", "plan-a", 7, EVENT)
    assert first.newly_charged and not again.newly_charged
    assert again.epsilon_spent_total == first.epsilon_spent_total
    assert len(ledger.charges("heart")) == 1
    with pytest.raises(ChargeConflict):
        ledger.charge("heart", "plan-a", 7, round_event(SCHEDULE, 1.0))
    ledger.charge("heart", "plan-b", 7, EVENT)  # another plan's round 7 is another charge
    assert len(ledger.charges("heart")) == 2


def test_dataset_without_budget_is_never_charged(db_path: Path) -> None:
    ledger = _ledger(db_path)
    with pytest.raises(BudgetNotSet):
        ledger.charge("unknown", "plan-a", 0, EVENT)
    assert ledger.charges("unknown") == []


def test_concurrent_threads_cannot_overspend(db_path: Path) -> None:
    _ledger(db_path).set_budget("heart", (_round_eps(3) + _round_eps(4)) / 2, 1e-3)
    outcomes: list[str] = []
    lock = threading.Lock()

    def worker(round_index: int) -> None:
        ledger = _ledger(db_path)  # one connection per thread, as silo workers would
        try:
            ledger.charge("heart", "plan-a", round_index, EVENT)
            result = "charged"
        except BudgetExceeded:
            result = "refused"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["charged"] * 3 + ["refused"] * 5
    ledger = _ledger(db_path)
    assert ledger.spent("heart")[0] <= ledger.budget("heart").epsilon


_CHARGE_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from silo_node.privacy_ledger import PrivacyLedger, BudgetExceeded
    from silo_node.storage import open_silo_db
    db, plan, rnd, event, hold = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
    ledger = PrivacyLedger(open_silo_db(Path(db)))
    try:
        charge = ledger.charge("heart", plan, rnd, event)
        print("CHARGED", int(charge.newly_charged), flush=True)
    except BudgetExceeded:
        print("REFUSED", flush=True)
    if hold == "hold":  # stands for 'masking and uploading': the SIGKILL lands here
        time.sleep(600)
    """
)


def _spawn(db: Path, plan: str, rnd: int, hold: bool) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _CHARGE_SCRIPT, str(db), plan, str(rnd), event_to_json(EVENT),
         "hold" if hold else "exit"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_sigkill_between_charge_and_upload_then_retry_counts_once(db_path: Path) -> None:
    _ledger(db_path).set_budget("heart", 50.0, 1e-3)
    silo = _spawn(db_path, "plan-a", 3, hold=True)
    assert silo.stdout is not None
    line = silo.stdout.readline()
    assert line.split() == ["CHARGED", "1"]
    os.kill(silo.pid, signal.SIGKILL)  # the process we started, by its id
    silo.wait(timeout=30)
    assert silo.returncode == -signal.SIGKILL
    # Restart: the charge survived; the retry of the same round does not charge again.
    assert len(_ledger(db_path).charges("heart")) == 1
    retry = _spawn(db_path, "plan-a", 3, hold=False)
    out, _ = retry.communicate(timeout=120)
    assert out.split() == ["CHARGED", "0"]
    ledger = _ledger(db_path)
    assert len(ledger.charges("heart")) == 1
    assert ledger.spent("heart")[0] == pytest.approx(_round_eps(1), rel=1e-9)


def test_concurrent_processes_cannot_overspend(db_path: Path) -> None:
    _ledger(db_path).set_budget("heart", (_round_eps(2) + _round_eps(3)) / 2, 1e-3)
    procs = [_spawn(db_path, "plan-a", r, hold=False) for r in range(6)]
    outs = [p.communicate(timeout=120)[0].split()[0] for p in procs]
    assert sorted(outs) == ["CHARGED"] * 2 + ["REFUSED"] * 4
    ledger = _ledger(db_path)
    assert len(ledger.charges("heart")) == 2
    assert ledger.spent("heart")[0] <= ledger.budget("heart").epsilon


def test_cli_show_and_set_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from silo_node.cli import ledger as ledger_cli

    import argparse

    parser = argparse.ArgumentParser()
    ledger_cli.register(parser.add_subparsers(dest="command"))
    from silo_node.node import IDENTITY_FILE

    state = tmp_path / "state"
    state.mkdir()
    (state / IDENTITY_FILE).write_text("st-marys\n")  # a folder bound to its silo: changes are audited
    args = parser.parse_args(["ledger", "--state-dir", str(state), "set-budget", "heart", "--epsilon", "3",
                              "--delta", "1e-3", "--by", "Dr. A. Jones"])
    assert args.func(args) == 0
    _ledger(state / "silo.sqlite3").charge("heart", "plan-a", 0, EVENT)
    capsys.readouterr()
    args = parser.parse_args(["ledger", "--state-dir", str(state), "show", "--json"])
    assert args.func(args) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["dataset"] == "heart" and rows[0]["rounds_charged"] == 1
    assert rows[0]["epsilon_spent"] == pytest.approx(_round_eps(1), rel=1e-9)
    assert rows[0]["epsilon_remaining"] == pytest.approx(3 - _round_eps(1), rel=1e-9)
    args = parser.parse_args(["ledger", "--state-dir", str(state), "show"])
    assert args.func(args) == 0
    assert "heart" in capsys.readouterr().out
    args = parser.parse_args(["ledger", "--state-dir", str(tmp_path / "missing"), "show"])
    assert args.func(args) == 1
