"""SecAgg+ through real processes: five hospitals, each masking with only 2 neighbours chosen
by the silos' signed nonces (safe only because the plan tolerates no dropout and no colluder:
graph_parameters refuses degree 2 otherwise), and the securely summed update equals plain aggregation of the
same stored updates."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from aggregator.aggregation import aggregate_round
from aggregator.state_store import StateStore
from healthfed_common.learning_process import build_federated_computations
from healthfed_common.plan import parse_plan
from healthfed_common.wire import codec
from pipelines.local_federation import local_federation
from tests.federation.conftest import toy_plan
from tests.federation.support import prepare_toy_silos

SILOS = ["alpha", "bravo", "charlie", "delta", "echo"]


def _stored_result(state_dir: Path, plan_hash: str, round_number: int):
    with sqlite3.connect(state_dir / "silo.sqlite3") as db:
        row = db.execute(
            "SELECT payload FROM released_result WHERE plan_hash=? AND round=?", (plan_hash, round_number)
        ).fetchone()
    return codec.decode(row[0])


@pytest.mark.slow
def test_secaggplus_sum_through_real_processes_equals_plain_aggregation(tmp_path: Path, write_plan) -> None:
    document = toy_plan(rounds=2, min_silos=3, deadline_s=120,
                        secure_aggregation={"protocol": "secagg_plus", "neighbours": 2, "threshold": 5,
                                            "colluding_silos": 0})
    plan_path = write_plan(document)
    with local_federation(tmp_path / "run", SILOS, printer=None) as federation:
        prepare_toy_silos(federation, tmp_path / "exports", {s: 30 + 5 * i for i, s in enumerate(SILOS)})
        aggregator = federation.start_aggregator(plan_path, tmp_path / "out", linger_s=1)
        for silo_id in SILOS:
            federation.start_silo(silo_id)
        assert federation.wait("aggregator", 600) == 0, "\n".join(aggregator.lines[-30:])
        report = federation.run_report(tmp_path / "out")
        plan = parse_plan((tmp_path / "out" / "plan.json").read_bytes())
        store = StateStore(federation.federation.aggregator_dir / "state" / "aggregator.sqlite3")
        states = {r: store.latest_checkpoint_at(plan.plan_hash, r) for r in (1, 2)}
        store.close()
        results = [_stored_result(federation.state_dir(s), plan.plan_hash, 2) for s in sorted(SILOS)]
    details = report["secure_aggregation_details"]
    assert details["protocol"] == "secagg_plus" and details["neighbours"] == 2 and details["threshold"] == 5
    assert [r["silos"] for r in report["round_metrics"]] == [sorted(SILOS)] * 2
    plain = aggregate_round(build_federated_computations(plan), states[1], results)
    for secure_weight, plain_weight in zip(states[2][:2], plain.state[:2]):
        np.testing.assert_allclose(secure_weight, plain_weight, rtol=0, atol=1e-6)
