"""Secure aggregation through real processes: a silo killed right after uploading its
masked input is still in the exact sum, and the update equals plain aggregation."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import numpy as np

from aggregator.aggregation import aggregate_round
from aggregator.state_store import StateStore
from healthfed_common.learning_process import build_federated_computations
from healthfed_common.plan import parse_plan
from healthfed_common.wire import codec
from pipelines.local_federation import local_federation
from tests.federation.conftest import DATASET, OPEN_APPROVAL_POLICY, TOY_POLICY, toy_plan, write_toy_export

SILOS = ["north", "south", "east"]


def _stored_result(state_dir: Path, plan_hash: str, round_number: int):
    with sqlite3.connect(state_dir / "silo.sqlite3") as db:
        row = db.execute(
            "SELECT payload FROM released_result WHERE plan_hash=? AND round=?", (plan_hash, round_number)
        ).fetchone()
    return codec.decode(row[0])


def test_silo_killed_after_its_masked_input_is_still_summed_exactly(tmp_path: Path, write_plan, traced_plans) -> None:
    # After the kill, round 2's unmasking phase waits out the deadline for east (secure-aggregation
    # phases wait for everyone addressed) and round 3 closes a grace after north and south: short
    # values, as every node loads the traced plan from its cache and a round takes seconds. The
    # grace also applies to round 2's training, where east must still be counted: 6 s leaves a
    # slow TensorFlow process on a loaded two-core runner time to answer after the other two.
    document = toy_plan(rounds=3, min_silos=2, deadline_s=12, straggler_grace_s=6,
                        secure_aggregation={"protocol": "secagg", "threshold": 2})
    plan_path = write_plan(document)
    with local_federation(tmp_path / "run", SILOS, printer=None) as federation:
        for index, silo_id in enumerate(SILOS):
            federation.set_approval_policy(silo_id, OPEN_APPROVAL_POLICY)
            export = write_toy_export(tmp_path / f"{silo_id}.csv", 40 + 20 * index, seed=index)
            federation.register_dataset(silo_id, DATASET, export, TOY_POLICY)
        aggregator = federation.start_aggregator(plan_path, tmp_path / "out", linger_s=1)
        for silo_id in SILOS:
            federation.start_silo(silo_id)
        east = federation.members["east"]
        deadline = time.time() + 300
        while not any("round 2: secure-aggregation phase masked_input answered" in line for line in east.lines):
            assert time.time() < deadline and east.process.poll() is None, "\n".join(east.lines[-20:])
            time.sleep(0.05)
        federation.kill("east")  # SIGKILL after its masked input reached the aggregator
        assert federation.wait("aggregator", 300) == 0, "\n".join(aggregator.lines[-30:])
        report = federation.run_report(tmp_path / "out")
        # the aggregator completed the plan with the enrolled cohort and wrote it beside the report
        plan = parse_plan((tmp_path / "out" / "plan.json").read_bytes())
        assert plan.plan_hash == report["plan_hash"] and plan.cohort_ids == tuple(sorted(SILOS))
        store = StateStore(federation.federation.aggregator_dir / "state" / "aggregator.sqlite3")
        states = {r: store.latest_checkpoint_at(plan.plan_hash, r) for r in (1, 2)}
        store.close()
        results = [_stored_result(federation.state_dir(s), plan.plan_hash, 2) for s in sorted(SILOS)]
    round_two = [r for r in report["round_metrics"] if r["round"] == 2][0]
    assert round_two["silos"] == ["east", "north", "south"], "east's masked input must be counted"
    assert report["secure_aggregation_details"]["threshold"] == 2
    later = [r for r in report["round_metrics"] if r["round"] == 3][0]
    assert later["silos"] == ["north", "south"]
    # the session's entry for this plan (the one every node loaded), verified as a node would
    computations = build_federated_computations(plan, traced_plans)
    plain = aggregate_round(computations, states[1], results)  # what a plain sum would have given
    for secure_weight, plain_weight in zip(states[2][:2], plain.state[:2]):
        np.testing.assert_allclose(secure_weight, plain_weight, rtol=0, atol=1e-6)
