"""Plan approval: refusals for unknown models, ε above policy and non-allowed features are
recorded; approvals expire; every decision reaches the decision table and the audit sink."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from silo_node.approvals import PlanApprovals, PlanNotApprovable, PlanNotFound, policy_violation
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
    assert decision.approved and decision.reason == "APPROVED"
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
    rejected = auto.consider(other, DATASET, now=T0)
    # the wire carries the registered code; the steward's own words stay in this node's record
    assert (rejected.status, rejected.reason) == ("rejected", "REJECTED_BY_STEWARD")
    assert "research question" not in rejected.message
    with pytest.raises(PlanNotFound):
        auto.approve("00000000deadbeef", by="x")


def test_show_explains_in_plain_words(approvals: PlanApprovals) -> None:
    plan = make_plan()
    approvals.consider(plan, DATASET, now=T0)
    text = approvals.show(plan.plan_hash)
    for words in ["logistic_regression", "cp: turned into yes/no indicators for the categories 2, 3, 4",
                  "ε = 3.0", "secure aggregation", "What leaves this silo", "No records"]:
        assert words in text


def _cohort_plan() -> tuple[object, list[dict[str, str]]]:
    from healthfed_common.silo_keys import encode_public_key, fingerprint, generate_signing_key

    keys = {silo: encode_public_key(generate_signing_key()) for silo in ("north", "south")}
    plan = make_plan(cohort=[{"silo_id": s, "signing_key": k} for s, k in keys.items()])
    return plan, [{"silo": s, "key_fingerprint": fingerprint(k)} for s, k in keys.items()]


def test_every_decision_is_in_the_real_audit_log_naming_the_person(conn, tmp_path) -> None:
    """The steward's approval and rejection, and the node's own expiry and policy decisions,
    land in the tamper-evident log with who decided and what the plan commits the silo to:
    name, purpose, cohort (ids + key fingerprints), ε allowance and expiry."""
    from compliance.audit_log import AuditLog
    from compliance.log_store import read_raw_log
    from compliance.entry import AuditEntry

    log = AuditLog.open(tmp_path / "audit" / "audit.sqlite3", tmp_path / "audit" / "signing.key", "silo:north")
    approvals = PlanApprovals(conn, ApprovalPolicy(max_epsilon=5.0), audit=log)
    plan, cohort = _cohort_plan()
    approvals.consider(plan, DATASET, now=T0)
    approvals.approve(plan.plan_hash, by="person:Dr. A. Jones", expires_at=T0 + timedelta(days=2), now=T0)
    approvals.consider(plan, DATASET, now=T0 + timedelta(days=3))  # the approval expired
    approvals.reject(plan.plan_hash, by="person:Dr. B. Smith", reason="not our question", now=T0 + timedelta(days=4))
    greedy = make_plan(name="greedy", dp={"target_epsilon": 9.0, "target_delta": 1e-5})
    approvals.consider(greedy, DATASET, now=T0)  # refused by the node's own policy
    entries = [AuditEntry.from_bytes(data) for _, data in read_raw_log(log.db_path).entries]
    log.close()
    by_kind = [(e.kind, e.actor) for e in entries]
    assert by_kind == [
        ("plan.received", "aggregator"), ("plan.approved", "person:Dr. A. Jones"),
        ("plan.expired", "silo:north"), ("plan.rejected", "person:Dr. B. Smith"),
        ("plan.received", "aggregator"), ("plan.rejected", "silo:north"),
    ]
    approved = entries[1].detail
    assert approved["name"] == "heart-lr" and approved["purpose"] == "Research on cardiac risk."
    assert approved["cohort"] == cohort
    assert (approved["epsilon"], approved["delta"]) == (3.0, 1e-5)
    assert approved["expires_at"] == "2025-03-03T12:00:00+00:00"
    assert approved["decided_by"] == "person:Dr. A. Jones"
    expired = entries[2].detail
    assert expired["approved_by"] == "person:Dr. A. Jones" and expired["expired_at"] == "2025-03-03T12:00:00+00:00"
    assert entries[3].detail["reason"] == "not our question"
    assert entries[5].detail["reason"] == "EPSILON_ABOVE_POLICY" and entries[5].detail["decided_by"] == "local policy"


def test_node_policy_names_the_first_limit_a_plan_breaks() -> None:
    """The codes a hospital's standing policy answers with (sent as the refusal's code)."""
    policy = ApprovalPolicy(max_delta=1e-6)
    dp = {"target_epsilon": 1.0, "target_delta": 1e-5}
    violation = policy_violation(make_plan(dp=dp), policy)
    assert violation is not None and violation[0] == "DELTA_ABOVE_POLICY" and "1e-05" in violation[1]
    assert policy_violation(make_plan(dp=dp | {"target_delta": 1e-7}), policy) is None
    violation = policy_violation(make_plan(dp=dp | {"target_delta": 1e-7}, cohort=[]), policy)
    assert violation is not None and violation[0] == "COHORT_MISSING"
