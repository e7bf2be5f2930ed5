"""Issue 12 items 5 and 2 where the silo trains and evaluates: the runner's ledger checks
against real components (dataset registry, approvals with the node's policy, privacy ledger,
released-results store, audit log) -- a non-private plan on a budgeted dataset, a view larger
than the plan allows, and evaluation as an unlimited oracle."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from healthfed_common.learning_process import build_keras_model
from healthfed_common.wire.messages import EvaluateTask, TrainResult
from silo_node.datasets.policy import DatasetPolicy
from silo_node.node import SiloNode, open_silo_node
from silo_node.runner import SiloRunner, TaskRefused
from tests.silo_data.plans import make_plan

DATASET = "cardio"
POLICY = {"features": {"age": {"transforms": ["identity"]}, "sex": {"transforms": ["identity"]}}, "label": "outcome"}
FEATURES = [{"name": "age", "transform": "identity"}, {"name": "sex", "transform": "identity"}]


def _plan(**overrides: Any) -> Any:
    return make_plan(**{
        "dataset": DATASET, "features": FEATURES, "label": {"name": "outcome", "positive_values": ["1"]},
        "secure_aggregation": {"protocol": "none"}, "rounds": 2,
        "dp": {"target_epsilon": 3.0, "target_delta": 1e-5}, **overrides,
    })


def _node(tmp_path: Path, **policy: Any) -> SiloNode:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump({
        "auto_approve": True, "require_dp": False, "require_secure_aggregation": False, **policy}))
    node = open_silo_node(tmp_path / "state", "st-marys", policy_file=policy_file)
    rng = np.random.default_rng(0)
    export = tmp_path / "export.csv"
    pd.DataFrame({"age": rng.integers(30, 80, 80), "sex": rng.integers(0, 2, 80),
                  "outcome": rng.integers(0, 2, 80)}).to_csv(export, index=False)
    node.registry.add(DATASET, export, "tabular", DatasetPolicy.from_document(POLICY))
    return node


@pytest.fixture
def node(tmp_path: Path) -> Any:
    silo = _node(tmp_path)
    yield silo
    silo.close()


def _factory(node: SiloNode, plan: Any, round_number: int = 1) -> Any:
    runner = SiloRunner(node, connection=None)
    view = node.registry.training_view(plan.dataset, plan, "train")
    return runner._dataset_factory(plan, view, round_number)


def _code(call: Any) -> str:
    with pytest.raises(TaskRefused) as refused:
        call()
    return refused.value.code


# --- max_examples_per_silo -------------------------------------------------------------
def test_a_view_larger_than_the_plan_allows_is_refused_before_any_charge(node: SiloNode) -> None:
    node.ledger.set_budget(DATASET, 10.0, 1e-5)
    n_train = len(node.registry.training_view(DATASET, _plan(), "train").labels)
    assert _code(lambda: _factory(node, _plan(max_examples_per_silo=n_train - 1))) == "TOO_MANY_EXAMPLES"
    assert node.ledger.charges(DATASET) == []
    _factory(node, _plan(max_examples_per_silo=n_train))  # exactly the bound is fine (and charged)
    assert len(node.ledger.charges(DATASET)) == 1


# --- non-private plans on budgeted datasets -------------------------------------------
def test_non_private_plan_on_a_budgeted_dataset_is_refused_by_default(node: SiloNode) -> None:
    plain = _plan(dp=None)
    _factory(node, plain)  # no budget: the dataset is not under the ledger, the plan runs
    node.ledger.set_budget(DATASET, 10.0, 1e-5)
    assert _code(lambda: _factory(node, plain)) == "NON_PRIVATE_PLAN_ON_BUDGETED_DATASET"
    assert node.ledger.charges(DATASET) == []


def test_non_private_plan_charged_as_infinity_by_policy_before_training(tmp_path: Path) -> None:
    node = _node(tmp_path, non_private_plans_on_budgeted_datasets="charge_infinity")
    try:
        node.ledger.set_budget(DATASET, 10.0, 1e-5)
        plain = _plan(dp=None)
        assert callable(_factory(node, plain, 1))
        _factory(node, plain, 1)  # a retry of the round
        charges = node.ledger.charges(DATASET)
        assert [(c.plan_hash, c.round, c.non_private) for c in charges] == [(plain.plan_hash, 1, True)]
        assert math.isinf(node.ledger.spent(DATASET)[0]) and node.ledger.remaining(DATASET)[0] == 0.0
        runner = SiloRunner(node, connection=None)
        assert runner._privacy_declaration(plain) == {"epsilon_spent_infinite": 1.0, "delta": 1e-5,
                                                      "epsilon_remaining": 0.0}
        # Every later DP plan on the dataset is refused: its records are fully disclosed.
        assert _code(lambda: _factory(node, _plan(), 1)) == "PRIVACY_BUDGET_EXCEEDED"
    finally:
        node.close()


# --- evaluation under control -----------------------------------------------------------
def _evaluate(node: SiloNode, plan: Any, weights: list[np.ndarray]) -> Any:
    task = EvaluateTask("eval-1", plan.canonical_bytes(), plan.plan_hash, tuple(weights))
    return SiloRunner(node, connection=None)._evaluate(task)


def test_evaluation_only_for_plans_trained_here_and_at_most_the_policy_limit(node: SiloNode) -> None:
    plan = _plan()
    final = [np.asarray(w) for w in build_keras_model(plan).get_weights()]
    probe = [w + 0.5 for w in final]  # another model the aggregator would like scored
    assert _code(lambda: _evaluate(node, plan, final)) == "EVALUATION_NOT_PARTICIPANT"
    node.released.put(TrainResult("st-marys", "t", plan.plan_hash, plan.rounds, (), ()), "0" * 64)
    first = _evaluate(node, plan, final)
    again = _evaluate(node, plan, final)  # the aggregator retrying the same evaluation
    assert first.metrics == again.metrics and first.num_examples == again.num_examples > 0
    assert _code(lambda: _evaluate(node, plan, probe)) == "EVALUATION_LIMIT_REACHED"
    disclosures = node.ledger.disclosures(DATASET)
    assert len(disclosures) == 1 and disclosures[0].released["metrics"] == first.metrics
