"""A hospital's silo process is SIGKILLed in the middle of a round, after it took its train
task (charged its privacy ledger and trained: the moment it logs "trained on"), and restarted
from the same kit and state directory. It rejoins the round it dropped, the plan finishes
every round with it, and under DP its ledger holds exactly one charge per (plan, round): the
restarted silo re-sends the update it stored as released instead of training again, and
never lets two different updates of one round leave."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest

from aggregator.state_store import StateStore
from compliance.entry import AuditEntry
from compliance.log_store import read_raw_log
from healthfed_common.plan import parse_plan
from pipelines.local_federation import local_federation
from silo_node.node import audit_paths
from silo_node.privacy_ledger import PrivacyLedger
from silo_node.storage import open_silo_db
from tests.federation.conftest import DATASET, toy_plan
from tests.federation.support import living, prepare_toy_silos, wait_for_line

SILOS = ["north", "south", "east"]
ROUNDS = 3
DP = {"target_epsilon": 4.0, "target_delta": 1e-5, "l2_norm_clip": 1.0}


def _round_two(state_dir: Path, plan_hash: str) -> tuple[list[float], bool, list[str]]:
    """(charge times, whether a result is stored as released, sha256 of each TrainResult
    recorded in the egress log, which a silo writes just before sending) for round 2, read
    from the silo's database. Read-only and without changing the journal mode: the silo may be
    frozen (SIGSTOP) in the middle of a write, and a WAL reader never waits for a writer."""
    path = state_dir / "silo.sqlite3"
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30.0)) as conn:
        charged = [row[0] for row in conn.execute(
            "SELECT charged_at FROM privacy_charge WHERE plan_hash=? AND round=2", (plan_hash,))]
        released = conn.execute(
            "SELECT 1 FROM released_result WHERE plan_hash=? AND round=2", (plan_hash,)).fetchone() is not None
        left = [row[0] for row in conn.execute(
            "SELECT sha256 FROM egress WHERE plan_hash=? AND round=2 AND kind='TrainResult'", (plan_hash,))]
    return charged, released, left


def _freeze_once_released(process_group: int, state_dir: Path, plan_hash: str, timeout_s: float = 120) -> None:
    """SIGSTOPs the silo and lets it run in 2 ms steps until its round-2 update is stored as
    released, then leaves it frozen: killed now, it has released an update it may not have
    sent (the window between storing a result and handing it to the aggregator)."""
    os.killpg(process_group, signal.SIGSTOP)
    deadline = time.time() + timeout_s
    while not _round_two(state_dir, plan_hash)[1]:
        assert time.time() < deadline, "the silo never stored its round-2 result"
        os.killpg(process_group, signal.SIGCONT)
        time.sleep(0.002)
        os.killpg(process_group, signal.SIGSTOP)
        time.sleep(0.01)


def _audited_charges(state_dir: Path, plan_hash: str) -> list[int]:
    """Rounds of the successful `dp.charge` events in the silo's audit log, in log order."""
    rounds = []
    for _, data in read_raw_log(audit_paths(state_dir)[0]).entries:
        entry = AuditEntry.from_bytes(data)
        if entry.kind == "dp.charge" and entry.outcome_name == "success" and entry.detail["plan_hash"] == plan_hash:
            rounds.append(int(entry.detail["round"]))
    return rounds


def test_a_silo_killed_after_taking_its_task_restarts_rejoins_and_charges_each_round_once(
    tmp_path: Path, write_plan
) -> None:
    document = toy_plan(rounds=ROUNDS, min_silos=3, deadline_s=240, dp=DP)
    plan = parse_plan(document)
    plan_path = write_plan(document)
    with local_federation(tmp_path / "run", SILOS, printer=print) as federation:
        prepare_toy_silos(federation, tmp_path / "exports", {"north": 60, "south": 40, "east": 80})
        for silo_id in SILOS:
            with closing(open_silo_db(federation.state_dir(silo_id) / "silo.sqlite3")) as conn:
                PrivacyLedger(conn).set_budget(DATASET, epsilon=10.0, delta=1e-4)
        # linger long enough for the restarted silo (slower: it loads TensorFlow again) to poll once
        # more and learn the plan finished, or --exit-when-finished never fires
        aggregator = federation.start_aggregator(plan_path, tmp_path / "out", linger_s=15)
        for silo_id in SILOS:
            federation.start_silo(silo_id)
        first = federation.members["east"]
        wait_for_line(first, "round 2: trained on", 600)
        _freeze_once_released(first.process.pid, federation.state_dir("east"), plan.plan_hash)
        federation.kill("east")  # SIGKILL: charged, trained, stored as released, (almost surely) not sent
        killed_pid = first.process.pid
        charged_before, released_before, _ = _round_two(federation.state_dir("east"), plan.plan_hash)
        restarted = federation.start_silo("east")
        assert federation.wait("aggregator", 400) == 0, "\n".join(aggregator.lines[-40:])
        for silo_id in SILOS:
            assert federation.wait(silo_id, 60) == 0, "\n".join(federation.members[silo_id].lines[-20:])
        report = federation.run_report(tmp_path / "out")
        state = federation.state_dir("east")
        charged_after, _, left_after = _round_two(state, plan.plan_hash)
        with closing(open_silo_db(state / "silo.sqlite3")) as conn:
            ledger = PrivacyLedger(conn)
            charges = ledger.charges(DATASET, plan.plan_hash)
            spent, _ = ledger.spent(DATASET)
            released = sorted(r[0] for r in conn.execute(
                "SELECT round FROM released_result WHERE plan_hash=?", (plan.plan_hash,)))
        store = StateStore(federation.federation.aggregator_dir / "state" / "aggregator.sqlite3")
        declared = store.declarations(plan.plan_hash)
        store.close()
        pids = [killed_pid] + [member.process.pid for member in federation.members.values()]

    assert report["rounds_completed"] == ROUNDS
    assert [r["silos"] for r in report["round_metrics"]] == [sorted(SILOS)] * ROUNDS, \
        "east's round 2 arrived after its restart, and it took part in round 3"
    assert sorted(c.round for c in charges) == list(range(1, ROUNDS + 1)), "one charge per (plan, round)"
    assert sorted(_audited_charges(state, plan.plan_hash)) == list(range(1, ROUNDS + 1))
    assert released == list(range(1, ROUNDS + 1))
    east_declared = [row for row in declared if row[2] == "east"]
    assert [row[1] for row in east_declared] == [ROUNDS]
    assert east_declared[0][3] == pytest.approx(spent), "what east declared last is what its ledger composed"
    assert len(charged_before) == 1, "the ledger is charged before training"
    assert charged_after == charged_before, "the restart did not charge round 2 again"
    assert len(set(left_after)) == 1, "one update of round 2 left the silo (perhaps sent twice, never two)"
    restarted_log = "\n".join(restarted.lines)
    offered_again = "round 2 attempt 1: took the train task" in restarted_log  # not if the first one got through
    if released_before:
        assert "round 2: trained on" not in restarted_log, "a released round is never trained again"
        assert not offered_again or "re-sending the update released before" in restarted_log
    elif offered_again:
        assert "round 2: trained on" in restarted_log, "a round killed before its release is trained again"
    print(f"killed east with round 2 charged, {'' if released_before else 'not '}stored as released; "
          f"the restarted silo was {'' if offered_again else 'not '}offered round 2 again")
    time.sleep(0.2)
    assert living(pids) == []
