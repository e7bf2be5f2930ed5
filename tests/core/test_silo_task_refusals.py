"""Tasks a silo cannot carry out (issue 11: every refusal code the silo can send appears in a
test). Each runs through the real runner's `_answer` -- the path a polled task takes -- on a
real silo state folder (`open_silo_node`: SQLite registry, approvals, privacy ledger, released
results, egress record, audit log) and checks what the aggregator receives (a `Refusal` with
the code and a message written here), what the silo's audit log says (`round.refused` with that
code), and that nothing was charged, disclosed or released for the refused task.

Only the aggregator's end of the connection is a stand-in: it records what the silo submits."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from compliance.log_store import read_raw_log
from healthfed_common.error_codes import ErrorCode
from healthfed_common.plan import Plan
from healthfed_common.wire.messages import Ack, AuditCheckpoint, EvaluateResult, EvaluateTask, Refusal, TrainResult, TrainTask
from silo_node.datasets.policy import DatasetPolicy
from silo_node.node import SiloNode, audit_paths, open_silo_node
from silo_node.runner import SiloRunner
from tests.silo_data.plans import make_plan

SILO = "st-marys"
DATASET = "cardio"
POLICY = {"features": {"age": {"transforms": ["identity"]}, "sex": {"transforms": ["identity"]}}, "label": "outcome"}
FEATURES = [{"name": "age", "transform": "identity"}, {"name": "sex", "transform": "identity"}]


class RecordingAggregator:
    """The aggregator's end of the silo's connection: keeps every answer, accepts everything."""

    def __init__(self) -> None:
        self.answers: list[Any] = []

    def submit(self, message: Any) -> Ack:
        if not isinstance(message, AuditCheckpoint):
            self.answers.append(message)
        return Ack(True)


def _plan(**overrides: Any) -> Plan:
    return make_plan(**{
        "dataset": DATASET, "features": FEATURES, "label": {"name": "outcome", "positive_values": ["1"]},
        "secure_aggregation": {"protocol": "none"}, "rounds": 2, "min_silos_per_round": 1,
        "dp": {"target_epsilon": 3.0, "target_delta": 1e-5}, **overrides,
    })


def _open(tmp_path: Path, split: str | None = None) -> SiloNode:
    """A silo with an 80-record export registered (with `split`, every record in that subset)
    and a privacy budget on it."""
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump({"auto_approve": True, "require_dp": False,
                                           "require_secure_aggregation": False}))
    node = open_silo_node(tmp_path / "state", SILO, policy_file=policy_file)
    rng = np.random.default_rng(0)
    table = pd.DataFrame({"age": rng.integers(30, 80, 80), "sex": rng.integers(0, 2, 80), "outcome": rng.integers(0, 2, 80)})
    if split is not None:
        table["split"] = split
    table.to_csv(tmp_path / "export.csv", index=False)
    node.registry.add(DATASET, tmp_path / "export.csv", "tabular", DatasetPolicy.from_document(POLICY))
    node.ledger.set_budget(DATASET, 10.0, 1e-4)
    return node


@pytest.fixture
def node(tmp_path: Path) -> Iterator[SiloNode]:
    silo = _open(tmp_path)
    yield silo
    silo.close()


def _answer(node: SiloNode, task: TrainTask | EvaluateTask) -> Any:
    """What the aggregator receives when the silo takes `task` from a poll."""
    aggregator = RecordingAggregator()
    runner = SiloRunner(node, aggregator)
    runner._answer(task, runner._train if isinstance(task, TrainTask) else runner._evaluate)
    (answer,) = aggregator.answers
    return answer


def _audited_refusals(node: SiloNode) -> list[str]:
    """Codes of the `round.refused` entries in the silo's own audit log."""
    assert node.plan_cache_dir is not None
    raw = read_raw_log(audit_paths(node.plan_cache_dir.parent)[0])  # STATE/plan-cache -> STATE
    events = [json.loads(entry) for _, entry in raw.entries]
    return [e["detail"]["code"] for e in events if e["kind"] == "round.refused"]


def _assert_refused(answer: Any, code: str, *phrases: str) -> None:
    assert isinstance(answer, Refusal), answer
    assert answer.code == code and answer.code in ErrorCode.__members__
    for phrase in phrases:
        assert phrase in answer.message, answer.message
    assert "Traceback" not in answer.message and ".py" not in answer.message


def _participated(node: SiloNode, plan: Plan) -> None:
    """The silo released the plan's last round (evaluation is only for plans it trained in)."""
    node.released.put(TrainResult(SILO, "t", plan.plan_hash, plan.rounds, (), ()), "0" * 64)


def _weights(plan: Plan) -> list[np.ndarray]:
    from healthfed_common.learning_process import build_keras_model

    return [np.asarray(w) for w in build_keras_model(plan).get_weights()]


# -- evaluation ----------------------------------------------------------------------------
def test_weights_that_do_not_fit_the_plans_model_are_refused_and_cost_no_evaluation(node: SiloNode) -> None:
    """The aggregator sends a model of another shape (here: the plan's weights with one input
    row too many). Refused before anything is computed or recorded, so the silo's one allowed
    evaluation of the plan is still there for the real model."""
    plan = _plan()
    _participated(node, plan)
    fitting = _weights(plan)
    misfit = [np.zeros((fitting[0].shape[0] + 1, *fitting[0].shape[1:]), fitting[0].dtype), *fitting[1:]]
    task = EvaluateTask("eval-misfit", plan.canonical_bytes(), plan.plan_hash, tuple(misfit))
    _assert_refused(_answer(node, task), ErrorCode.WEIGHTS_MISMATCH, "do not fit the plan's model")
    assert _audited_refusals(node) == [ErrorCode.WEIGHTS_MISMATCH]
    assert node.ledger.disclosures(DATASET) == [] and node.egress.list(plan.plan_hash) == []
    answer = _answer(node, EvaluateTask("eval-real", plan.canonical_bytes(), plan.plan_hash, tuple(fitting)))
    assert isinstance(answer, EvaluateResult) and answer.num_examples > 0  # the limit (1) was not spent
    assert len(node.ledger.disclosures(DATASET)) == 1


def test_a_dataset_without_held_out_records_refuses_evaluation(tmp_path: Path) -> None:
    """The export's split column puts every record in training: there is nothing to evaluate
    on, and nothing is disclosed (no 'metrics' of zero records)."""
    node = _open(tmp_path, split="train")
    try:
        plan = _plan()
        _participated(node, plan)
        task = EvaluateTask("eval-1", plan.canonical_bytes(), plan.plan_hash, tuple(_weights(plan)))
        _assert_refused(_answer(node, task), ErrorCode.NO_EVALUATION_DATA, "no held-out records")
        assert _audited_refusals(node) == [ErrorCode.NO_EVALUATION_DATA]
        assert node.ledger.disclosures(DATASET) == [] and node.egress.list(plan.plan_hash) == []
    finally:
        node.close()


# -- training ------------------------------------------------------------------------------
def test_a_plan_the_silo_cannot_build_is_refused_before_any_charge(
    node: SiloNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan is approved and its data view built, but this silo's tracer process cannot
    run (here: its Python installation is unusable, as after a broken upgrade): the round is
    refused with PLAN_UNBUILDABLE, the tracer's output stays in the silo's log, and nothing
    is charged, released or put in the plan cache."""
    plan = _plan(seeds={"model_init": 7, "data_order": 7})  # a plan no other test built
    monkeypatch.setenv("PYTHONHOME", str(tmp_path / "no-python-here"))
    task = TrainTask(task_id="train-1", plan_json=plan.canonical_bytes(), plan_hash=plan.plan_hash, round=1,
                     attempt=1, fingerprint="0" * 64, client_input=(), secagg=None)
    answer = _answer(node, task)
    _assert_refused(answer, ErrorCode.PLAN_UNBUILDABLE, "cannot build the plan's model")
    assert "no-python-here" not in answer.message and "Fatal" not in answer.message
    assert _audited_refusals(node) == [ErrorCode.PLAN_UNBUILDABLE]
    assert node.ledger.charges(DATASET) == []
    assert node.released.get(plan.plan_hash, 1) is None and node.egress.list(plan.plan_hash) == []
    assert node.plan_cache_dir is not None and not any(node.plan_cache_dir.glob("*.plan"))
