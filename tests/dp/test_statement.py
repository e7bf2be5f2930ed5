"""The privacy statement says what a plan's epsilon covers and what it does not."""

from __future__ import annotations

import json

import pytest

from healthfed_common.dp.accounting import NEIGHBOURING_RELATION
from healthfed_common.dp.statement import privacy_statement, render_text
from healthfed_common.plan import Plan, parse_plan


def _plan(dp: bool = True, **extra: object) -> Plan:
    return parse_plan({**extra,
        "name": "p", "dataset": "heart", "model": {"id": "logistic_regression"},
        "features": [{"name": "chol"}, {"name": "cp", "transform": "one_hot", "categories": ["1", "2"]}],
        "label": {"name": "num"}, "client_optimizer": {"name": "sgd", "learning_rate": 0.1},
        "local_epochs": 1, "batch_size": 16, "rounds": 3, "min_silos_per_round": 2,
        **({"dp": {"target_epsilon": 1.0, "target_delta": 1e-3, "accountant": "rdp"}} if dp else {}),
    })


def test_dp_statement_names_unit_relation_public_accountant_and_gaps() -> None:
    statement = privacy_statement(_plan(), dataset_size=199, max_evaluations=2, public_bounds={"chol": (100, 600)})
    assert statement["differentially_private"] is True
    assert statement["epsilon"] == 1.0 and statement["delta"] == 1e-3
    assert "one record" in statement["unit_of_privacy"]
    assert statement["neighbouring_relation"]["name"] == NEIGHBOURING_RELATION == "replace_one"
    assert any("dataset size n" in item for item in statement["public"])
    assert any("bounds" in item for item in statement["public"])
    assert statement["accountant"]["name"] == "rdp"
    assert "chol: clamped to [100, 600]" in statement["preprocessing"][0]
    gaps = " ".join(statement["not_covered"])
    assert "Hyper-parameter tuning" in gaps and "at most 2 evaluation(s)" in gaps and "WITHOUT differential privacy" in gaps
    calibration = statement["silo_calibration"]
    assert calibration["epsilon_replace_one"] <= 1.0
    assert calibration["epsilon_add_remove"] < 0.7 * calibration["epsilon_replace_one"]
    json.dumps(statement, allow_nan=False)  # strict JSON for summary.json and reports
    text = render_text(statement)
    assert "replace-one" in text and "n = 199" in text and "Not covered" in text


def test_non_dp_statement_is_epsilon_infinity() -> None:
    statement = privacy_statement(_plan(dp=False))
    assert statement["differentially_private"] is False
    assert statement["epsilon"] == "infinity"
    assert statement["not_covered"][0].startswith("Everything")
    assert "own training mean" in statement["preprocessing"][0]
    json.dumps(statement, allow_nan=False)
    assert "epsilon = infinity" in render_text(statement)


def test_non_dp_public_bounds_statement_says_the_public_scaling_but_still_infinity() -> None:
    """Public scaling removes one leak (other records' statistics) but adds no noise: the plan
    stays epsilon = infinity, and the statement says both."""
    statement = privacy_statement(_plan(dp=False, preprocessing="public_bounds"), public_bounds={"chol": (100, 600)})
    assert statement["epsilon"] == "infinity" and statement["differentially_private"] is False
    assert "chol: clamped to [100, 600]" in statement["preprocessing"][0]


@pytest.mark.parametrize("dp", [True, False])
def test_statement_binds_the_plan_hash(dp: bool) -> None:
    plan = _plan(dp)
    assert privacy_statement(plan)["plan"]["plan_hash"] == plan.plan_hash


def test_demo_summary_statement_names_the_demo_policys_public_bounds() -> None:
    from pipelines.demo import demo_privacy_statement

    statement = demo_privacy_statement(rounds=2)
    assert statement["preprocessing"][0] == ("age: clamped to [0, 100] and scaled to [-1, 1]; missing values take "
                                             "the policy's public imputation value")
    assert statement["epsilon"] == 3.0 and statement["neighbouring_relation"]["name"] == "replace_one"
