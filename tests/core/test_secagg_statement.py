"""The secure-aggregation statement people read (approval text, plans show, summary.json) gives
the figures the threat model proves: t of n, c <= 2t - n - 1 colluders, the cohort's fingerprints."""

from __future__ import annotations

import pytest

from healthfed_common.plan import PlanInvalid, parse_plan
from healthfed_common.secagg_statement import secure_aggregation_statement
from silo_node.approvals import explain
from tests.silo_data.plans import COHORT, make_plan


@pytest.mark.parametrize("t, c", [(3, 2), (2, 0)])
def test_colluders_default_to_2t_minus_n_minus_1(t: int, c: int) -> None:
    plan = make_plan(min_silos_per_round=2, secure_aggregation={"protocol": "secagg", "threshold": t})
    assert plan.secagg_colluders == c


def test_more_colluders_than_the_threshold_tolerates_is_refused() -> None:
    document = make_plan().model_dump(mode="json")
    document.update(min_silos_per_round=2, secure_aggregation={"protocol": "secagg", "threshold": 2,
                                                               "colluding_silos": 1})
    with pytest.raises(PlanInvalid, match="colluding_silos 1 exceeds"):
        parse_plan(document)


def test_statement_states_threshold_colluders_and_every_fingerprint() -> None:
    plan = make_plan(secure_aggregation={"protocol": "secagg"})  # default t over a cohort of 3
    statement = secure_aggregation_statement(plan)
    assert statement["threshold"] == 3 and statement["cohort_size"] == 3
    assert statement["colluding_silos_tolerated"] == 2
    assert statement["honest_updates_in_any_revealed_sum_at_least"] == 1
    assert [m["silo_id"] for m in statement["cohort"]] == ["north", "south", "east"]
    text = explain(plan, "pending", None, None, None, None)
    for member in plan.cohort:
        assert member.fingerprint in text
    assert "at least 3 of the 3 cohort hospitals" in text and "colludes with up to 2" in text
    assert "fake hospitals" in text, "the approval text says what the steward must check out of band"


def test_plain_plan_says_the_coordinator_sees_each_update() -> None:
    plan = make_plan(secure_aggregation={"protocol": "none"})
    assert "sees each hospital's update" in secure_aggregation_statement(plan)["guarantee"]


def test_threshold_below_the_round_minimum_is_refused_at_validation() -> None:
    document = make_plan().model_dump(mode="json")
    document.update(min_silos_per_round=3, secure_aggregation={"protocol": "secagg", "threshold": 2})
    with pytest.raises(PlanInvalid, match="below min_silos_per_round"):
        parse_plan(document)
    document.update(secure_aggregation={"protocol": "secagg", "threshold": 1})
    with pytest.raises(PlanInvalid):
        parse_plan(document)


def test_cohort_lists_each_silo_and_key_once() -> None:
    document = make_plan().model_dump(mode="json")
    document["cohort"] = [COHORT[0], COHORT[0]]
    with pytest.raises(PlanInvalid, match="twice"):
        parse_plan(document)
    document["cohort"] = [COHORT[0], {"silo_id": "other", "signing_key": COHORT[0]["signing_key"]}]
    with pytest.raises(PlanInvalid, match="one signing key for two silos"):
        parse_plan(document)


def test_secure_aggregation_plan_without_cohort_cannot_be_approved() -> None:
    from silo_node.approvals import policy_violation
    from silo_node.policy import ApprovalPolicy

    plan = make_plan(cohort=[])
    violation = policy_violation(plan, ApprovalPolicy())
    assert violation is not None and violation[0] == "COHORT_MISSING"
