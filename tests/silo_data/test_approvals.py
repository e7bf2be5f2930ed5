"""Plan approval: refusals for unknown models, ε above policy and non-allowed features are
recorded; approvals expire; every decision reaches the decision table and the audit sink."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from silo_node.approvals import PlanApprovals, PlanNotApprovable, PlanNotFound
from silo_node.datasets.policy import DatasetPolicy
from silo_node.policy import ApprovalPolicy

from .conftest import RecordingAudit
from .exports import HEART_POLICY
from .plans import HEART_FEATURES, make_plan

DATASET = DatasetPolicy.from_document(HEART_POLICY)
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)


@pytest.fixture
def approvals(conn, audit: RecordingAudit) -> PlanApprovals:
    return PlanApprovals(conn, ApprovalPolicy(max_epsilon=5.0), audit=audit)


def test_new_plan_is_pending_until_a_steward_approves(approvals: PlanApprovals, audit: RecordingAudit) -> None:
    plan = make_plan()
    decision = approvals.consider(plan, DATASET, now=T0)
    assert (decision.status, decision.reason) == ("pending", "AWAITING_APPROVAL")
    assert approvals.consider(plan, DATASET, now=T0).status == "pending"
    approvals.approve(plan.plan_hash[:12], by="dr.steward", now=T0)
    decision = approvals.consider(plan, DATASET, now=T0 + timedelta(days=1))
    assert decision.approved
    assert [r.status for r in approvals.list()] == ["approved"]
    assert audit.kinds() == ["plan.received", "plan.approved"]
    assert [event for _, event, _, _ in approvals.history(plan.plan_hash)] == ["received", "approved"]


def test_approvals_expire(approvals: PlanApprovals, audit: RecordingAudit) -> None:
    plan = make_plan()
    approvals.consider(plan, DATASET, now=T0)
    approvals.approve(plan.plan_hash, by="dr.steward", expires_at=T0 + timedelta(days=2), now=T0)
    assert approvals.consider(plan, DATASET, now=T0 + timedelta(days=1)).approved
    later = approvals.consider(plan, DATASET, now=T0 + timedelta(days=3))
    assert (later.status, later.reason) == ("pending", "APPROVAL_EXPIRED")
    assert approvals.consider(plan, DATASET, now=T0 + timedelta(days=4)).status == "pending"
    assert audit.kinds() == ["plan.received", "plan.approved", "plan.expired"]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"model": {"id": "resnet152"}}, "UNKNOWN_MODEL"),
        ({"dp": {"target_epsilon": 8.0, "target_delta": 1e-5}}, "EPSILON_ABOVE_POLICY"),
        ({"dp": None}, "DP_REQUIRED"),
        ({"secure_aggregation": {"protocol": "none"}}, "SECURE_AGGREGATION_REQUIRED"),
        ({"features": [*HEART_FEATURES, {"name": "slope", "transform": "identity"}]}, "FEATURE_NOT_ALLOWED"),
    ],
)
def test_plans_outside_policy_are_rejected_and_recorded(
    approvals: PlanApprovals, audit: RecordingAudit, change: dict, reason: str
) -> None:
    plan = make_plan(**change)
    decision = approvals.consider(plan, DATASET, now=T0)
    assert (decision.status, decision.reason) == ("rejected", reason)
    record = approvals.record(plan.plan_hash)
    assert (record.status, record.reason, record.decided_by) == ("rejected", reason, "local-policy")
    assert audit.kinds() == ["plan.received", "plan.rejected"]
    assert audit.events[1]["outcome"] == "minor_failure"
    approvals.consider(plan, DATASET, now=T0)  # asked again: no duplicate decision
    assert audit.kinds() == ["plan.received", "plan.rejected"]


def test_steward_cannot_approve_beyond_policy(approvals: PlanApprovals) -> None:
    plan = make_plan(dp={"target_epsilon": 50.0, "target_delta": 1e-5})
    approvals.consider(plan, DATASET, now=T0)
    with pytest.raises(PlanNotApprovable) as caught:
        approvals.approve(plan.plan_hash, by="dr.steward", now=T0)
    assert caught.value.reason == "EPSILON_ABOVE_POLICY"


def test_reject_and_auto_approve(conn, audit: RecordingAudit) -> None:
    auto = PlanApprovals(conn, ApprovalPolicy(auto_approve=True, allowed_models=("logistic_regression",),
                                              approval_lifetime_days=1), audit=audit)
    plan = make_plan()
    decision = auto.consider(plan, DATASET, now=T0)
    assert (decision.status, decision.reason) == ("approved", "AUTO_APPROVED")
    assert auto.consider(plan, DATASET, now=T0 + timedelta(days=2)).reason == "AUTO_APPROVED"  # renewed after expiry
    mlp = make_plan(model={"id": "mlp", "hidden_units": [8]})
    assert auto.consider(mlp, DATASET, now=T0).reason == "MODEL_NOT_ALLOWED"
    other = make_plan(rounds=9)
    auto.consider(other, DATASET, now=T0)
    auto.reject(other.plan_hash, by="dr.steward", reason="not our research question")
    assert auto.consider(other, DATASET, now=T0).status == "rejected"
    with pytest.raises(PlanNotFound):
        auto.approve("00000000deadbeef", by="x")


def test_show_explains_in_plain_words(approvals: PlanApprovals) -> None:
    plan = make_plan()
    approvals.consider(plan, DATASET, now=T0)
    text = approvals.show(plan.plan_hash)
    for words in ["logistic_regression", "cp: turned into yes/no indicators for the categories 2, 3, 4",
                  "ε = 3.0", "secure aggregation", "What leaves this silo", "No records"]:
        assert words in text
