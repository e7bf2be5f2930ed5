"""Plan approval: which training plans may run on this silo's data.

A plan is known by its hash. On first sight it is recorded as received (pending). Each time
the runner asks (`consider`), the plan is checked against the node's approval policy and the
dataset's minimisation policy; a plan outside them is rejected with a reason code, whoever
approved it. Within them it runs only if a data steward approved it (`approve`) or the local
policy auto-approves, and only until the approval expires. Every state change is a row in
`plan_decisions` and, when an audit log is attached, an audit event.
"""

from __future__ import annotations

import builtins
import sqlite3
from silo_node.audit_sink import AuditSink
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal, Protocol

from healthfed_common.plan import Plan, plan_summary
from healthfed_common.secagg_statement import approval_lines
from silo_node.datasets.errors import DataLayerError, FeatureNotAllowed
from silo_node.datasets.minimisation import check_plan
from silo_node.datasets.policy import DatasetPolicy
from silo_node.policy import ApprovalPolicy

Status = Literal["approved", "pending", "rejected"]

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS plans (
        plan_hash    TEXT PRIMARY KEY,
        name         TEXT NOT NULL,
        plan_json    TEXT NOT NULL,
        received_at  TEXT NOT NULL,
        status       TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'rejected', 'expired')),
        decided_by   TEXT,
        decided_at   TEXT,
        expires_at   TEXT,
        reason       TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS plan_decisions (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        plan_hash  TEXT NOT NULL REFERENCES plans(plan_hash),
        at         TEXT NOT NULL,
        event      TEXT NOT NULL,
        actor      TEXT NOT NULL,
        reason     TEXT
    )""",
)


class PlanNotFound(DataLayerError, LookupError):
    code = "PLAN_NOT_FOUND"


class PlanNotApprovable(DataLayerError, PermissionError):
    """The plan is outside the node's approval policy; no person can approve it."""

    code = "PLAN_NOT_APPROVABLE"

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason




@dataclass(frozen=True)
class Decision:
    """`reason` is a stable code (safe to send to the aggregator); `message` is for people."""

    plan_hash: str
    status: Status
    reason: str
    message: str

    @property
    def approved(self) -> bool:
        return self.status == "approved"


@dataclass(frozen=True)
class PlanRecord:
    plan_hash: str
    name: str
    plan: Plan
    received_at: str
    status: str
    decided_by: str | None
    decided_at: str | None
    expires_at: str | None
    reason: str | None


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def policy_violation(plan: Plan, policy: ApprovalPolicy) -> tuple[str, str] | None:
    """(reason code, message) for the first node-policy limit the plan breaks, or None."""
    from healthfed_common.model_ids import MODEL_KINDS  # the registry's ids, without loading TensorFlow

    if plan.model.id not in MODEL_KINDS:
        return "UNKNOWN_MODEL", f"model {plan.model.id!r} is not in this build's model registry"
    if policy.allowed_models and plan.model.id not in policy.allowed_models:
        return "MODEL_NOT_ALLOWED", f"model {plan.model.id!r} is not in the node's allowed models"
    if plan.dp is None:
        if policy.require_dp:
            return "DP_REQUIRED", "the plan has no differential privacy and the node requires it"
    else:
        if policy.max_epsilon is not None and plan.dp.target_epsilon > policy.max_epsilon:
            return "EPSILON_ABOVE_POLICY", f"ε {plan.dp.target_epsilon} exceeds the node's maximum {policy.max_epsilon}"
        if policy.max_delta is not None and plan.dp.target_delta > policy.max_delta:
            return "DELTA_ABOVE_POLICY", f"δ {plan.dp.target_delta} exceeds the node's maximum {policy.max_delta}"
    secagg = plan.secure_aggregation
    if secagg.protocol == "none":
        if policy.require_secure_aggregation:
            return "SECURE_AGGREGATION_REQUIRED", "updates would not be protected by secure aggregation"
    else:
        if not plan.cohort:
            return "COHORT_MISSING", "a secure-aggregation plan must name its cohort (hospitals and signing keys)"
        threshold = plan.secagg_threshold
        if threshold < policy.min_secure_aggregation_threshold:
            return "SECAGG_THRESHOLD_TOO_LOW", (
                f"secure-aggregation threshold {threshold} is below the node's minimum "
                f"{policy.min_secure_aggregation_threshold}")
    if policy.allowed_features is not None:
        for name in (*plan.feature_names, plan.label.name):
            if name not in policy.allowed_features:
                return "FEATURE_NOT_ALLOWED", f"{name!r} is not in the node's feature allow-list"
    return None


LOCAL_POLICY = "local-policy"
"""`decided_by` of decisions the node's approval policy took (in the audit log, the node's
own actor `silo:<id>` records them)."""


class PlanApprovals:
    def __init__(
        self, conn: sqlite3.Connection, policy: ApprovalPolicy, *, audit: AuditSink | None = None,
        node_actor: str | None = None,
    ) -> None:
        """`node_actor` names the node in audit entries of decisions its policy took
        (default: the audit log's origin, e.g. `silo:st-marys`)."""
        self._conn = conn
        self._policy = policy
        self._audit = audit
        self._node_actor = node_actor or str(getattr(audit, "origin", "") or LOCAL_POLICY)
        for statement in _SCHEMA:
            conn.execute(statement)

    @property
    def policy(self) -> ApprovalPolicy:
        """The node's standing policy (the runner reads its ledger and evaluation rules)."""
        return self._policy

    # -- the runner's question ------------------------------------------------------------
    def consider(self, plan: Plan, dataset_policy: DatasetPolicy, *, now: datetime | None = None) -> Decision:
        """May this plan run now on the dataset governed by `dataset_policy`?"""
        now = now or _now()
        plan_hash = plan.plan_hash
        record = self._receive(plan, now)
        violation = policy_violation(plan, self._policy)
        if violation is None:
            try:
                check_plan(plan, dataset_policy)
            except FeatureNotAllowed as error:
                violation = (error.code, str(error))
        if violation is not None:
            code, message = violation
            if record.status != "rejected" or record.reason != code:
                self._set(plan_hash, "rejected", LOCAL_POLICY, now, None, code, "rejected", outcome="minor_failure")
            return Decision(plan_hash, "rejected", code, message)
        if record.status == "rejected" and record.decided_by != LOCAL_POLICY:
            # the steward's own words (`--reason`) stay in this node's record; the wire gets the code
            return Decision(plan_hash, "rejected", "REJECTED_BY_STEWARD", f"rejected by {record.decided_by}")
        # A plan the local policy once rejected is judged afresh: the policy may have changed.
        if record.status == "approved":
            if record.expires_at is None or datetime.fromisoformat(record.expires_at) > now:
                return Decision(plan_hash, "approved", "APPROVED", f"approved by {record.decided_by}")
            self._set(plan_hash, "expired", LOCAL_POLICY, now, None, "APPROVAL_EXPIRED", "expired")
            record = self._get(plan_hash)
        if self._policy.auto_approve:
            lifetime = self._policy.approval_lifetime
            expires = None if lifetime is None else now + lifetime
            self._set(plan_hash, "approved", LOCAL_POLICY, now, expires, "AUTO_APPROVED", "approved")
            return Decision(plan_hash, "approved", "AUTO_APPROVED", "approved by the node's local policy")
        reason = "APPROVAL_EXPIRED" if record.status == "expired" else "AWAITING_APPROVAL"
        return Decision(plan_hash, "pending", reason, "waiting for a data steward: silo-node plans approve " + plan_hash[:12])

    # -- the data steward's actions -------------------------------------------------------
    def approve(self, plan_hash: str, by: str, expires_at: datetime | None = None, *, now: datetime | None = None) -> None:
        """Approves a received plan. Without `expires_at` the policy's approval lifetime
        applies. Refused (PlanNotApprovable) when the plan breaks the node policy."""
        now = now or _now()
        record = self._get(plan_hash)
        plan_hash = record.plan_hash
        violation = policy_violation(record.plan, self._policy)
        if violation is not None:
            self._set(plan_hash, "rejected", LOCAL_POLICY, now, None, violation[0], "rejected", outcome="minor_failure")
            raise PlanNotApprovable(f"cannot approve: {violation[1]}", violation[0])
        if expires_at is None and self._policy.approval_lifetime is not None:
            expires_at = now + self._policy.approval_lifetime
        self._set(plan_hash, "approved", by, now, expires_at, "APPROVED", "approved")

    def reject(self, plan_hash: str, by: str, reason: str, *, now: datetime | None = None) -> None:
        plan_hash = self._get(plan_hash).plan_hash
        self._set(plan_hash, "rejected", by, now or _now(), None, reason, "rejected")

    def list(self) -> list[PlanRecord]:
        rows = self._conn.execute("SELECT * FROM plans ORDER BY received_at, plan_hash").fetchall()
        return [self._record(row) for row in rows]

    def history(self, plan_hash: str) -> builtins.list[tuple[str, str, str, str | None]]:
        """(at, event, actor, reason) for every decision about the plan, oldest first."""
        rows = self._conn.execute(
            "SELECT at, event, actor, reason FROM plan_decisions WHERE plan_hash = ? ORDER BY id", (plan_hash,)
        ).fetchall()
        return [tuple(row) for row in rows]

    def record(self, plan_hash: str) -> PlanRecord:
        return self._get(plan_hash)

    def show(self, plan_hash: str) -> str:
        """What the plan does, with which data, and what leaves the silo, in plain words."""
        record = self._get(plan_hash)
        return explain(record.plan, record.status, record.decided_by, record.expires_at, record.reason,
                       policy_violation(record.plan, self._policy))

    # -- internals ------------------------------------------------------------------------
    def _receive(self, plan: Plan, now: datetime) -> PlanRecord:
        plan_hash = plan.plan_hash
        inserted = self._conn.execute(
            "INSERT OR IGNORE INTO plans (plan_hash, name, plan_json, received_at, status) VALUES (?,?,?,?, 'pending')",
            (plan_hash, plan.name, plan.model_dump_json(), _iso(now)),
        ).rowcount
        if inserted:
            self._log(plan_hash, now, "received", "aggregator", None, "plan.received", "success", plan=plan)
        return self._get(plan_hash)

    def _set(
        self, plan_hash: str, status: str, by: str, now: datetime, expires: datetime | None,
        reason: str | None, event: str, *, outcome: str = "success",
    ) -> None:
        previous = self._get(plan_hash)
        self._conn.execute(
            "UPDATE plans SET status = ?, decided_by = ?, decided_at = ?, expires_at = ?, reason = ? WHERE plan_hash = ?",
            (status, by, _iso(now), _iso(expires), reason, plan_hash),
        )
        self._log(plan_hash, now, event, by, reason, f"plan.{event}", outcome, expires=expires, previous=previous)

    def _log(
        self, plan_hash: str, now: datetime, event: str, actor: str, reason: str | None, kind: str, outcome: str,
        *, plan: Plan | None = None, expires: datetime | None = None, previous: PlanRecord | None = None,
    ) -> None:
        """One row in plan_decisions and, with an audit log, one event naming who decided
        (a person, the node's policy as the node itself, or the aggregator for a received
        plan), what the plan commits the silo to, the expiry, and the reason."""
        self._conn.execute(
            "INSERT INTO plan_decisions (plan_hash, at, event, actor, reason) VALUES (?,?,?,?,?)",
            (plan_hash, _iso(now), event, actor, reason),
        )
        if self._audit is None:
            return
        plan = plan or (previous.plan if previous is not None else self._get(plan_hash).plan)
        detail: dict[str, Any] = plan_summary(plan)
        detail["decided_by"] = "local policy" if actor == LOCAL_POLICY else actor
        if reason:
            detail["reason"] = reason
        if event == "approved":
            detail["expires_at"] = _iso(expires)
        if event == "expired" and previous is not None:
            detail["approved_by"] = previous.decided_by
            detail["expired_at"] = previous.expires_at
        who = self._node_actor if actor == LOCAL_POLICY else actor
        self._audit.record(kind, actor=who, outcome=outcome, entities={"plan": plan_hash}, detail=detail)

    def _get(self, plan_hash: str) -> PlanRecord:
        rows = self._conn.execute("SELECT * FROM plans WHERE plan_hash LIKE ? || '%'", (plan_hash,)).fetchall()
        if len(rows) != 1 or len(plan_hash) < 8:
            raise PlanNotFound(f"no single received plan has hash {plan_hash!r}" + (" (ambiguous prefix)" if len(rows) > 1 else ""))
        return self._record(rows[0])

    @staticmethod
    def _record(row: tuple[Any, ...]) -> PlanRecord:
        plan_hash, name, plan_json, received, status, by, at, expires, reason = row
        return PlanRecord(plan_hash, name, Plan.model_validate_json(plan_json), received, status, by, at, expires, reason)


_TRANSFORM_WORDS = {
    "standardize": "centred and scaled with this hospital's own training mean and spread",
    "identity": "used as recorded",
    "one_hot": "turned into yes/no indicators for the categories {categories}",
    "year": "reduced to the year only",
}


# How the shared model weighs this silo's update, where a plan departs from the default (by the
# examples it processed, which the steward already reads as the record count).
_WEIGHTING_WORDS = {
    "sqrt_examples": " The shared model counts this silo's update by the square root of the number of records it "
                     "trained on (not the number itself), so small hospitals count for more than their size; the "
                     "weight reveals nothing beyond the record count.",
    "uniform": " The shared model counts every silo's update alike, whatever its number of records.",
}


def explain(
    plan: Plan, status: str, decided_by: str | None, expires_at: str | None, reason: str | None,
    violation: tuple[str, str] | None,
) -> str:
    """A data steward's summary of a plan: purpose, data used, privacy, what leaves."""
    lines = [f"Plan {plan.name!r}  hash {plan.plan_hash}", f"Status: {status}"
             + (f" by {decided_by}" if decided_by else "") + (f", until {expires_at}" if expires_at else "")
             + (f" ({reason})" if reason else "")]
    if violation is not None:
        lines.append(f"This node's policy does NOT allow this plan: {violation[1]} [{violation[0]}].")
    if plan.purpose:
        lines.append(f"Purpose (as stated by the coordinator): {plan.purpose}")
    if plan.description:
        lines.append(f"Description: {plan.description}")
    lines += [
        "",
        f"What it does: trains the model {plan.model.id!r} from HealthFed's built-in model list "
        f"(no code is sent with the plan) for {plan.rounds} round(s). In each round this silo runs "
        f"{plan.local_epochs} pass(es) over its training records of dataset {plan.dataset!r} in batches of "
        f"{plan.batch_size}, using at most {plan.max_examples_per_silo} records."
        + (f" Algorithm: FedProx (each local step is also pulled towards the round's shared model, strength "
           f"mu = {plan.algorithm.mu:g}; this reads no further data)." if plan.algorithm.name == "fedprox" else "")
        + _WEIGHTING_WORDS.get(plan.algorithm.client_weighting, ""),
        "",
        "Which data it reads (only these columns; everything else stays unseen):",
    ]
    for spec in plan.features:
        words = _TRANSFORM_WORDS[spec.transform].format(categories=", ".join(spec.categories or ()))
        if spec.transform == "standardize" and plan.uses_public_bounds:
            words = ("clamped to the public range this hospital's dataset policy declares and scaled to -1..1 "
                     + ("(no statistic of the records is used under differential privacy)" if plan.dp is not None
                        else "(the plan asks for public bounds; no statistic of the records is used)"))
        if spec.standardize_indicators:
            words += ", each centred and scaled with this hospital's own training mean and spread"
        lines.append(f"  - {spec.name}: {words}")
    lines.append(f"  - label {plan.label.name}: positive when it is one of {', '.join(plan.label.positive_values)}")
    lines.append("")
    if plan.dp is None:
        lines.append("Privacy: NO differential privacy: the update is not protected by added noise.")
    else:
        lines.append(
            f"Privacy: record-level differential privacy (DP-SGD): over the whole plan this silo's records are "
            f"protected at ε = {plan.dp.target_epsilon}, δ = {plan.dp.target_delta} (smaller is more private); "
            f"each record's influence is clipped to {plan.dp.l2_norm_clip}.")
    secagg = plan.secure_aggregation
    if secagg.protocol == "none":
        protection = "sent WITHOUT secure aggregation: the coordinator sees this hospital's own update"
    else:
        protection = f"masked with secure aggregation ({secagg.protocol}, see below)"
    lines += [
        "",
        "What leaves this silo, each round:",
        f"  - one model update (the change to the model's weights, each number clipped to ±{plan.update_bound} "
        f"and rounded to integers), {protection};",
        "  - allow-listed aggregate metrics (training loss, accuracy, number of examples).",
        *([f"At the final evaluation this silo also fine-tunes the shared model on its own training records "
           f"({plan.personalization.describe()}) and releases that model's metrics on its held-out "
           "records beside the shared model's; the fine-tuned weights never leave."]
          if plan.personalization is not None else []),
        "No records, identifiers or free text leave the silo. Every release is listed by `silo-node egress`.",
        "",
        *approval_lines(plan),
    ]
    return "\n".join(lines)
