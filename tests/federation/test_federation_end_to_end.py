"""Real federations: one aggregator process and one process per hospital on loopback,
talking mutual TLS, each silo training on its own registered dataset."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from aggregator.state_store import StateStore
from healthfed_common.plan import parse_plan
from pipelines.local_federation import LocalFederation, local_federation
from silo_node.datasets.registry import DatasetRegistry
from silo_node.storage import open_silo_db
from tests.federation.conftest import DATASET, OPEN_APPROVAL_POLICY, TOY_POLICY, toy_plan, write_toy_export
from tests.monitoring.release_files import read_csv, read_scalars

SILOS = ["north", "south", "east"]
ROWS = {"north": 60, "south": 40, "east": 80}
# Round deadline of the kill tests: each attempt after the kill waits it out for east (3
# attempts when too few remain). It must cover a round's training with the traced plan loaded
# from the node's cache (a few seconds); round 1 may also take up to 3 attempts.
KILL_TEST_DEADLINE_S = 12.0


def _setup(federation: LocalFederation, tmp_path: Path, policy_overrides: dict[str, dict] | None = None) -> None:
    for index, silo_id in enumerate(SILOS):
        federation.set_approval_policy(silo_id, OPEN_APPROVAL_POLICY)
        export = write_toy_export(tmp_path / "exports" / f"{silo_id}.csv", ROWS[silo_id], seed=index)
        policy = (policy_overrides or {}).get(silo_id, TOY_POLICY)
        federation.register_dataset(silo_id, DATASET, export, policy)


def _train_view(federation: LocalFederation, silo_id: str, plan_document: dict) -> tuple[np.ndarray, np.ndarray]:
    state = federation.state_dir(silo_id)
    registry = DatasetRegistry(open_silo_db(state / "silo.sqlite3"), state / "datasets")
    view = registry.training_view(DATASET, parse_plan(plan_document), "train")
    return view.features, view.labels


def _final_weights(federation: LocalFederation, plan_hash: str) -> list[np.ndarray]:
    store = StateStore(federation.federation.aggregator_dir / "state" / "aggregator.sqlite3")
    checkpoint = store.latest_checkpoint(plan_hash)
    store.close()
    assert checkpoint is not None
    return checkpoint.state


@pytest.mark.cold_plan_cache  # each node traces the plan itself; their fingerprints must agree
def test_three_rounds_through_real_processes_equal_tff_process_next(tmp_path: Path, write_plan) -> None:
    plan_document = toy_plan(rounds=3, min_silos=3)
    plan_path = write_plan(plan_document)
    plan = parse_plan(plan_document)
    with local_federation(tmp_path / "run", SILOS, printer=None) as federation:
        _setup(federation, tmp_path)
        federation.start_aggregator(plan_path, tmp_path / "out", linger_s=1)
        for silo_id in SILOS:
            federation.start_silo(silo_id)
        assert federation.wait("aggregator", 600) == 0, "\n".join(federation.members["aggregator"].lines[-30:])
        report = federation.run_report(tmp_path / "out")
        assert report["rounds_completed"] == 3
        assert report["secure_aggregation"] == "none"
        _assert_round_metrics_released(report)
        state = _final_weights(federation, plan.plan_hash)
        arrays = {}
        for silo_id in sorted(SILOS):
            features, labels = _train_view(federation, silo_id, plan_document)
            arrays[f"{silo_id}/features"], arrays[f"{silo_id}/labels"] = features, labels
    np.savez(tmp_path / "data.npz", **arrays)
    log_path = tmp_path / "reference.log"
    with log_path.open("w") as log:
        # A file, not a pipe: TFF's worker_binary inherits it and would hold a pipe open.
        reference = subprocess.Popen(
            [sys.executable, "-m", "tests.federation.tff_reference", str(plan_path), str(tmp_path / "data.npz"),
             str(tmp_path / "reference.json")],
            start_new_session=True, stdout=log, stderr=subprocess.STDOUT,
        )
        try:
            reference.wait(timeout=300)
        finally:
            os.killpg(reference.pid, signal.SIGKILL)  # TFF's worker_binary lives in this group
    assert reference.returncode == 0, log_path.read_text()[-3000:]
    expected = [np.asarray(a, dtype=np.float32) for a in json.loads((tmp_path / "reference.json").read_text())]
    assert len(expected) == 2
    for got, want in zip(state[:2], expected):
        np.testing.assert_allclose(got, want, atol=1e-5)


def test_round_completes_without_a_killed_silo_when_the_minimum_allows(tmp_path: Path, write_plan) -> None:
    # the rounds after the kill wait out the deadline for east: short, as the nodes load the traced plan
    plan_path = write_plan(toy_plan(rounds=3, min_silos=2, deadline_s=KILL_TEST_DEADLINE_S))
    with local_federation(tmp_path / "run", SILOS, printer=None) as federation:
        _setup(federation, tmp_path)
        aggregator = federation.start_aggregator(plan_path, tmp_path / "out", linger_s=1)
        for silo_id in SILOS:
            federation.start_silo(silo_id)
        _wait_for_line(aggregator, "round 1/3", 300)
        federation.kill("east")  # SIGKILL while round 2 is offered
        assert federation.wait("aggregator", 300) == 0, "\n".join(aggregator.lines[-30:])
        report = federation.run_report(tmp_path / "out")
    assert report["rounds_completed"] == 3
    later_rounds = [r for r in report["round_metrics"] if r["round"] >= 2]
    assert all(r["silos"] == ["north", "south"] for r in later_rounds)


def test_round_fails_clearly_when_too_few_silos_remain_and_the_aggregator_stays_up(tmp_path: Path, write_plan) -> None:
    plan_path = write_plan(toy_plan(rounds=2, min_silos=3, deadline_s=KILL_TEST_DEADLINE_S))
    with local_federation(tmp_path / "run", SILOS, printer=None) as federation:
        _setup(federation, tmp_path)
        aggregator = federation.start_aggregator(plan_path, tmp_path / "out", linger_s=1)
        for silo_id in SILOS:
            federation.start_silo(silo_id)
        _wait_for_line(aggregator, "round 1/2", 300)
        federation.kill("east")
        _wait_for_line(aggregator, "round 2 attempt 1/3", 120)
        assert aggregator.process.poll() is None, "the aggregator must survive a failed round"
        assert federation.wait("aggregator", 120) == 1
    output = "\n".join(aggregator.lines)
    assert "2 of 3 silos returned results, the plan needs 3" in output
    assert f"no answer before the {KILL_TEST_DEADLINE_S:.0f}s deadline from ['east']" in output
    assert "stopped at round 2" in output


def test_silo_refuses_a_plan_its_dataset_cannot_serve_and_the_aggregator_records_why(tmp_path: Path, write_plan) -> None:
    narrow = TOY_POLICY | {"features": {name: TOY_POLICY["features"][name] for name in ("f0", "f1", "f2")}}
    plan_document = toy_plan(rounds=1, min_silos=2)
    plan_path = write_plan(plan_document)
    with local_federation(tmp_path / "run", SILOS, printer=None) as federation:
        _setup(federation, tmp_path, {"east": narrow})
        federation.start_aggregator(plan_path, tmp_path / "out", linger_s=1)
        for silo_id in SILOS:
            federation.start_silo(silo_id)
        assert federation.wait("aggregator", 300) == 0
        report = federation.run_report(tmp_path / "out")
        store = StateStore(federation.federation.aggregator_dir / "state" / "aggregator.sqlite3")
        outcomes = store.outcomes(parse_plan(plan_document).plan_hash)
        store.close()
    refusal = [r for r in report["refusals"] if r["silo"] == "east"][0]
    assert refusal["code"] == "FEATURE_NOT_ALLOWED"
    assert "f3" in refusal["message"]
    assert ("east", "refused", "FEATURE_NOT_ALLOWED") in [(o[2], o[3], o[4]) for o in outcomes]


def test_no_process_outlives_a_federation_run(tmp_path: Path, write_plan) -> None:
    started = time.time()
    plan_path = write_plan(toy_plan(rounds=1, min_silos=3))
    with local_federation(tmp_path / "run", SILOS, printer=None) as federation:
        _setup(federation, tmp_path)
        federation.start_aggregator(plan_path, tmp_path / "out", linger_s=1)
        for silo_id in SILOS:
            federation.start_silo(silo_id)
        pids = [m.process.pid for m in federation.members.values()]
        assert federation.wait("aggregator", 300) == 0
    time.sleep(0.5)
    survivors = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert survivors == []
    workers = [
        p for p in psutil.process_iter(["cmdline", "create_time"])
        if "worker_binary" in " ".join(p.info["cmdline"] or []) and p.info["create_time"] >= started
    ]
    assert workers == [], "TFF's worker_binary must never be started by HealthFed processes"


def _assert_round_metrics_released(report: dict) -> None:
    """`aggregator run` released one CSV row and one set of TensorBoard scalars per round,
    by default under its state dir, with the figures its run report holds."""
    files = report["round_metrics_files"]
    assert "/state/metrics/" in files["csv"]
    rows = read_csv(Path(files["csv"]))
    scalars = read_scalars(Path(files["tensorboard"]))
    assert [row["round"] for row in rows] == ["1", "2", "3"]
    for row, record in zip(rows, report["round_metrics"]):
        assert int(row["silos"]) == len(record["silos"]) == 3
        assert float(row["round_seconds"]) == pytest.approx(record["seconds"])
        assert record["aggregate"], "the form reports training metrics"
        for name, value in record["aggregate"].items():
            assert float(row[f"train/{name}"]) == pytest.approx(value)
            assert scalars[f"train/{name}"][record["round"]] == [pytest.approx(value, rel=1e-6)]
    assert sorted(scalars["round_seconds"]) == [1, 2, 3]


def _wait_for_line(member, text: str, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if any(text in line for line in member.lines):
            return
        if member.process.poll() is not None:
            raise AssertionError(f"{member.name} exited early:\n" + "\n".join(member.lines[-30:]))
        time.sleep(0.2)
    raise AssertionError(f"{member.name} never printed {text!r}:\n" + "\n".join(member.lines[-30:]))
