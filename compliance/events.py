"""The closed vocabulary of audit event kinds, and their FHIR R4 AuditEvent codes.

Why closed: a report can only summarise what it can name, and a free-text kind would let a
typo silently drop an event out of the "refusals" or "disclosures" sections. `record()`
refuses anything not listed here.

Codes: `type` is a DICOM audit event ID (DCM, the code system IHE ATNA and FHIR's
AuditEvent examples use); `subtype` carries the DICOM event type code where DICOM defines
one, and always a HealthFed code (system `HEALTHFED_EVENT_SYSTEM`, code = the kind) so the
exact kind survives a round trip through any FHIR tool. Actions are FHIR's C/R/U/D/E;
exports of data and reports use R as DICOM PS3.15 prescribes for Export.

Conventions other components follow for `detail` (checked by `compliance.event_details`;
the report is built on them, extra keys are kept but not interpreted):

* ``dp.charge`` — {dataset, plan_hash, round, epsilon, delta, epsilon_spent_total,
  epsilon_budget, delta_budget}: one privacy-ledger charge, recorded *before* release;
  ``epsilon_spent_total`` is the dataset's cumulative ε after this charge.
* ``dp.budget_set`` — {dataset, privacy_unit, epsilon_budget, delta_budget,
  previous_epsilon_budget, previous_delta_budget, rounds_charged, epsilon_spent?, code?}: a
  budget set or changed by the person named as actor (or refused, with the code).
  ε values that are infinite (a non-private plan was charged) are written as "inf".
* ``payload.released`` — {plan_hash, round, kind, bytes, sha256, recipient}: what left the
  node (e.g. kind "masked_update" or "metrics"), its size and hash, and who received it.
  This is the HIPAA accounting-of-disclosures source.
* ``round.joined`` / ``round.refused`` / ``round.completed`` — {plan_hash, round, silos?,
  reason?}: the aggregator lists participating ``silos``; a refusal gives a ``reason``.
* ``silo.failing`` / ``silo.rejoined`` — {plan_hash, round, silo, consecutive_misses}: the
  aggregator stopped waiting for a silo that missed that many round offers in a row, or
  saw it answer again.
* ``checkpoint.witnessed`` — {origin, size, root_hash}: a peer's checkpoint accepted by
  this node's `WitnessStore`.
* ``checkpoint.rejected`` — {origin, size, reason}: a peer's checkpoint this node refused, as
  offered (a silo refusing the aggregator's; origin and size may be whatever was sent).
* ``report.exported`` — {format, sha256, period_from, period_to, log_size}.
* ``audit.verified`` — {entries, checkpoints_checked, witness_checkpoints_checked, rollback}:
  a verification run that found the log intact (a failed log is not appended to).
* ``plan.received`` / ``plan.approved`` / ``plan.rejected`` / ``plan.expired`` — {plan_hash,
  name, purpose, dataset, cohort: [{silo, key_fingerprint}], epsilon, delta, decided_by,
  expires_at?, reason?}: what the decision commits the silo to.
* ``plan.started`` — the same plan fields and ``out``: the aggregator began (or, after a
  restart, resumed) running the plan; the actor is the person who started `aggregator run`.
* ``dataset.registered`` / ``dataset.removed`` — {kind, content_sha256, records,
  policy_sha256, dropped?, generalised?}: which policy de-identified it and what it removed.

Actors follow `healthfed_common.actors`: a person is ``person:<name>`` (the one who ran the
command), a node acting on its own is ``silo:<id>`` or ``aggregator``.

Entities map names (e.g. "dataset", "plan", "certificate") to identifiers; they become
FHIR ``AuditEvent.entity`` elements.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal, Mapping

from compliance.errors import InvalidEvent, UnknownEventKind

DICOM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
HEALTHFED_EVENT_SYSTEM = "https://healthfed.org/fhir/CodeSystem/audit-event-kind"
AUDIT_ACTION_SYSTEM = "http://hl7.org/fhir/audit-event-action"

Action = Literal["C", "R", "U", "D", "E"]
Category = Literal["security", "privacy", "disclosure", "governance", "operation", "audit"]


@dataclass(frozen=True)
class Coding:
    """A FHIR Coding (system, code, display)."""

    system: str
    code: str
    display: str

    def to_dict(self) -> dict[str, str]:
        """The JSON form stored in log entries and FHIR resources."""
        return {"system": self.system, "code": self.code, "display": self.display}


@dataclass(frozen=True)
class EventKind:
    """One kind of auditable event: its FHIR codes, action and report category."""

    name: str
    type: Coding
    dicom_subtype: Coding | None
    action: Action
    category: Category
    description: str

    @property
    def subtypes(self) -> tuple[Coding, ...]:
        """DICOM subtype (if any) followed by the HealthFed subtype naming the kind."""
        own = Coding(HEALTHFED_EVENT_SYSTEM, self.name, self.description)
        return (self.dicom_subtype, own) if self.dicom_subtype else (own,)


APPLICATION_ACTIVITY = Coding(DICOM_SYSTEM, "110100", "Application Activity")
AUDIT_LOG_USED = Coding(DICOM_SYSTEM, "110101", "Audit Log Used")
EXPORT = Coding(DICOM_SYSTEM, "110106", "Export")
PATIENT_RECORD = Coding(DICOM_SYSTEM, "110110", "Patient Record")
QUERY = Coding(DICOM_SYSTEM, "110112", "Query")
SECURITY_ALERT = Coding(DICOM_SYSTEM, "110113", "Security Alert")
USER_AUTHENTICATION = Coding(DICOM_SYSTEM, "110114", "User Authentication")

NODE_AUTHENTICATION = Coding(DICOM_SYSTEM, "110126", "Node Authentication")
SECURITY_CONFIGURATION = Coding(DICOM_SYSTEM, "110129", "Security Configuration")
USE_OF_RESTRICTED_FUNCTION = Coding(DICOM_SYSTEM, "110132", "Use of Restricted Function")
USER_SECURITY_ATTRIBUTES_CHANGED = Coding(
    DICOM_SYSTEM, "110137", "User Security Attributes Changed"
)


def _kind(
    name: str,
    type_: Coding,
    subtype: Coding | None,
    action: Action,
    category: Category,
    description: str,
) -> EventKind:
    return EventKind(name, type_, subtype, action, category, description)


_KINDS = (
    _kind("certificate.issued", SECURITY_ALERT, USER_SECURITY_ATTRIBUTES_CHANGED, "C",
          "security", "A federation certificate was issued to a node"),
    _kind("certificate.revoked", SECURITY_ALERT, USER_SECURITY_ATTRIBUTES_CHANGED, "D",
          "security", "A federation certificate was revoked"),
    _kind("connection.refused", USER_AUTHENTICATION, NODE_AUTHENTICATION, "E",
          "security", "A connection was refused (authentication or authorisation failed)"),
    _kind("plan.received", APPLICATION_ACTIVITY, None, "C",
          "governance", "A training plan was received for review"),
    _kind("plan.approved", APPLICATION_ACTIVITY, USE_OF_RESTRICTED_FUNCTION, "U",
          "governance", "A training plan was approved by the data steward or local policy"),
    _kind("plan.rejected", APPLICATION_ACTIVITY, None, "U",
          "governance", "A training plan was rejected"),
    _kind("plan.expired", APPLICATION_ACTIVITY, None, "U",
          "governance", "A plan approval expired"),
    _kind("plan.started", APPLICATION_ACTIVITY, USE_OF_RESTRICTED_FUNCTION, "E",
          "governance", "A coordinator started (or restarted) running a training plan"),
    _kind("dataset.registered", PATIENT_RECORD, None, "C",
          "privacy", "A local dataset was registered for federated use"),
    _kind("dataset.removed", PATIENT_RECORD, None, "D",
          "privacy", "A local dataset was removed from federated use"),
    _kind("dataset.deidentified", PATIENT_RECORD, None, "E",
          "privacy", "A dataset was de-identified before use"),
    _kind("round.joined", APPLICATION_ACTIVITY, None, "E",
          "operation", "A node took part in a training round"),
    _kind("round.refused", APPLICATION_ACTIVITY, None, "E",
          "operation", "A node refused (or was refused) a training round"),
    _kind("secagg.masked", EXPORT, None, "R",
          "disclosure", "A silo's update entered a secure-aggregation session (masked); it never enters another"),
    _kind("round.completed", APPLICATION_ACTIVITY, None, "E",
          "operation", "A training round completed"),
    _kind("silo.failing", APPLICATION_ACTIVITY, None, "E",
          "operation", "A silo let several round offers in a row pass without a result; rounds stop waiting for it"),
    _kind("silo.rejoined", APPLICATION_ACTIVITY, None, "E",
          "operation", "A silo reported failing answered again and takes part in rounds"),
    _kind("dp.charge", QUERY, None, "U",
          "privacy", "Differential-privacy budget was charged for a dataset"),
    _kind("dp.budget_set", SECURITY_ALERT, SECURITY_CONFIGURATION, "U",
          "privacy", "A dataset's differential-privacy budget was set or changed (or the change refused)"),
    _kind("payload.released", EXPORT, None, "R",
          "disclosure", "Data (masked update or aggregate metrics) left the node"),
    _kind("checkpoint.signed", AUDIT_LOG_USED, None, "C",
          "audit", "A signed audit-log checkpoint was published to a witness"),
    _kind("checkpoint.witnessed", AUDIT_LOG_USED, None, "C",
          "audit", "A peer's signed audit-log checkpoint was verified and stored"),
    _kind("checkpoint.rejected", SECURITY_ALERT, None, "E",
          "audit", "A peer's audit-log checkpoint was refused (bad signature, another key, rollback or rewritten history)"),
    _kind("report.exported", AUDIT_LOG_USED, None, "R",
          "audit", "An audit report was exported from this log"),
    _kind("audit.verified", AUDIT_LOG_USED, None, "E",
          "audit", "A person verified this audit log (Merkle tree, signed checkpoints, witness)"),
    _kind("dp.budget_set", SECURITY_ALERT, SECURITY_CONFIGURATION, "U",
          "privacy", "A dataset's differential-privacy budget was set or changed"),
    _kind("configuration.changed", SECURITY_ALERT, SECURITY_CONFIGURATION, "U",
          "security", "Node configuration or local policy changed"),
    _kind("model.exported", EXPORT, None, "R",
          "disclosure", "A trained model was exported"),
)

EVENT_KINDS: Mapping[str, EventKind] = MappingProxyType({k.name: k for k in _KINDS})
"""Every kind `AuditLog.record` accepts, by name."""

REFUSAL_KINDS = frozenset(
    {"connection.refused", "plan.rejected", "plan.expired", "round.refused",
     "certificate.revoked"}
)
"""Kinds that are refusals in themselves, whatever their outcome."""

OUTCOMES: Mapping[str, str] = MappingProxyType(
    {"success": "0", "minor_failure": "4", "serious_failure": "8", "major_failure": "12"}
)
"""Our outcome names → FHIR AuditEvent.outcome codes."""


def event_kind(name: str) -> EventKind:
    """Look up a kind; raise `UnknownEventKind` listing the vocabulary if it is not in it."""
    try:
        return EVENT_KINDS[name]
    except (KeyError, TypeError):
        known = ", ".join(sorted(EVENT_KINDS))
        raise UnknownEventKind(f"unknown audit event kind {name!r}; known kinds: {known}") from None


def outcome_code(outcome: str) -> str:
    """FHIR outcome code for one of our outcome names (see `OUTCOMES`)."""
    try:
        return OUTCOMES[outcome]
    except (KeyError, TypeError):
        raise InvalidEvent(
            f"unknown outcome {outcome!r}; expected one of {', '.join(OUTCOMES)}"
        ) from None
