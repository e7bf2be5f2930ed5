"""A real federation (one `aggregator run` process, one `silo-node run` per hospital, mutual
TLS on loopback) whose aggregator.yaml names a PostgreSQL database_url: the plan's
checkpoints and round outcomes land in PostgreSQL, and no SQLite file is created."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from aggregator.state_store import open_state_store
from healthfed_common.plan import parse_plan
from pipelines.local_federation import local_federation
from tests.aggregator_state.conftest import use_database
from tests.federation.conftest import DATASET, OPEN_APPROVAL_POLICY, TOY_POLICY, toy_plan, write_toy_export

SILOS = ["north", "south"]


@pytest.mark.slow  # five TensorFlow processes: ~1-2 min on two shared cores
def test_federation_keeps_its_state_in_postgres(tmp_path: Path, postgres_url: str) -> None:
    plan_document = toy_plan(rounds=2, min_silos=2)
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan_document))
    plan_hash = parse_plan(plan_document).plan_hash
    with local_federation(tmp_path / "run", SILOS, printer=None) as federation:
        use_database(federation.federation.aggregator_config, postgres_url)
        for index, silo_id in enumerate(SILOS):
            federation.set_approval_policy(silo_id, OPEN_APPROVAL_POLICY)
            export = write_toy_export(tmp_path / "exports" / f"{silo_id}.csv", 40 + 20 * index, seed=index)
            federation.register_dataset(silo_id, DATASET, export, TOY_POLICY)
        aggregator = federation.start_aggregator(plan_path, tmp_path / "out", linger_s=1)
        for silo_id in SILOS:
            federation.start_silo(silo_id)
        assert federation.wait("aggregator", 300) == 0, "\n".join(aggregator.lines[-30:])
        report = federation.run_report(tmp_path / "out")
        state_dir = federation.federation.aggregator_dir / "state"
    assert report["rounds_completed"] == 2
    assert not (state_dir / "aggregator.sqlite3").exists()
    with open_state_store(postgres_url) as store:
        assert store.plan_status(plan_hash) == "completed"
        latest = store.latest_checkpoint(plan_hash)
        assert latest is not None and latest.round == 2
        first = store.latest_checkpoint_at(plan_hash, 1)
        assert [a.shape for a in latest.state[:2]] == [(4, 1), (1,)]  # logistic regression on f0..f3
        assert all(np.isfinite(a).all() for a in latest.state[:2])
        assert not np.array_equal(first[0], latest.state[0])  # round 2 trained on round 1's model
        results = sorted((r, silo) for r, _attempt, silo, outcome, _code, _message in store.outcomes(plan_hash)
                         if outcome == "result")
    assert results == [(1, "north"), (1, "south"), (2, "north"), (2, "south")]
