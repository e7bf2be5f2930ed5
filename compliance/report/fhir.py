"""FHIR R4 export: a Bundle (type collection) of AuditEvent resources, one per log entry in
the period, following the IHE Basic Audit Log Patterns (BALP, v1.1.x) and validated with the
`fhir.resources` R4B models (R4B's AuditEvent is R4's, element for element).

Why BALP: a hospital's audit repository (IHE ATNA with the FHIR feed) sorts AuditEvents by
pattern. What leaves a site is a **Privacy Disclosure at the Source**
(`IHE.BasicAudit.PrivacyDisclosure.Source`): Export type, the ISO 21089 "disclose" subtype,
action R, a source agent that is the audit source itself, a recipient agent, the custodian
that released the data, the purpose of use and an entity describing the data — here with the
ε the node's privacy ledger charged for that round, when the log holds the charge. A refused
connection is an authentication failure (DICOM User Authentication / Login with a failure
outcome, the ATNA pattern BALP builds on). Every other event follows BALP's common base: coded
type/subtype/action/outcome, an agent naming who acted, the observer.

Deliberate deviation, said once here and in the test: BALP's disclosure profile wants a
*patient* entity. A federated release is an aggregate over a whole dataset (a masked update,
clipped and noised under DP, or allow-listed metrics); no patient is its subject, and naming
one would itself disclose. The data entity names the dataset and the release instead.

Why validate here rather than trust our own mapping: a hospital will load this into its FHIR
server or ATNA repository; a structurally invalid resource would be rejected there, long after
the officer has left. `fhir.resources` checks structure, not terminology, so the coded values
we emit (action, outcome) are checked against their R4 value sets as well.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping

from pydantic import ValidationError

from compliance.entry import AuditEntry
from compliance.errors import ReportError
from compliance.report.data import ReportData
from healthfed_common.canonical_json import canonical_json

NODE_SYSTEM = "https://healthfed.org/fhir/NamingSystem/node"
ENTITY_SYSTEM = "https://healthfed.org/fhir/NamingSystem/entity"
LOG_ENTRY_SYSTEM = "https://healthfed.org/fhir/NamingSystem/audit-log-entry"
PAYLOAD_SYSTEM = "https://healthfed.org/fhir/NamingSystem/payload-sha256"
RELEASE_SYSTEM = "https://healthfed.org/fhir/NamingSystem/release"
SOURCE_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/security-source-type"
DICOM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
LIFECYCLE_SYSTEM = "http://terminology.hl7.org/CodeSystem/iso-21089-lifecycle"
PARTICIPATION_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
ACT_REASON_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
ENTITY_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
SECURITY_ROLE_SYSTEM = "http://terminology.hl7.org/CodeSystem/extra-security-role-type"
BALP_PRIVACY_DISCLOSURE_SOURCE = (
    "https://profiles.ihe.net/ITI/BALP/StructureDefinition/IHE.BasicAudit.PrivacyDisclosure.Source"
)
R4_ACTIONS = frozenset({"C", "R", "U", "D", "E"})
R4_OUTCOMES = frozenset({"0", "4", "8", "12"})
DISCLOSURE_KINDS = frozenset({"payload.released", "secagg.masked", "model.exported"})
"""Kinds recording something that left the node: Privacy Disclosure events."""
AUTHENTICATION_KINDS = frozenset({"connection.refused"})
_NAMESPACE = uuid.UUID("6f1d3f1e-2b9e-4c55-9a53-4a3d0f4c8e21")

Pattern = Literal["privacy-disclosure", "authentication-failure", "basic"]

SOURCE_ROLE = {"system": DICOM_SYSTEM, "code": "110153", "display": "Source Role ID"}
DESTINATION_ROLE = {"system": DICOM_SYSTEM, "code": "110152", "display": "Destination Role ID"}
CUSTODIAN = {"system": PARTICIPATION_SYSTEM, "code": "CST", "display": "custodian"}
DISCLOSE = {"system": LIFECYCLE_SYSTEM, "code": "disclose", "display": "Disclose Record Lifecycle Event"}
EXPORT_TYPE = {"system": DICOM_SYSTEM, "code": "110106", "display": "Export"}
LOGIN = {"system": DICOM_SYSTEM, "code": "110122", "display": "Login"}
RESEARCH = {"system": ACT_REASON_SYSTEM, "code": "HRESCH", "display": "healthcare research"}
SYSTEM_OBJECT = {"system": ENTITY_TYPE_SYSTEM, "code": "2", "display": "System Object"}
HUMAN_USER = {"system": SECURITY_ROLE_SYSTEM, "code": "humanuser", "display": "human user"}
APPLICATION = {"system": DICOM_SYSTEM, "code": "110150", "display": "Application"}

_RELEASE_WORDS = {
    "SecAggReply": "secure-aggregation protocol message (masked update, key shares or unmasking shares)",
    "TrainResult": "training result (model update and allow-listed training metrics)",
    "EvaluateResult": "evaluation result (allow-listed metrics and example count)",
    "masked_update": "masked model update",
    "metrics": "allow-listed aggregate metrics",
}


@dataclass(frozen=True)
class Charge:
    """ε charged to one dataset for one (plan, round), as the node's log recorded it."""

    dataset: str
    epsilon: str
    delta: str
    spent_total: str


@dataclass(frozen=True)
class ExportContext:
    """What a disclosure event needs from the rest of the log: charges and plan purposes."""

    charges: Mapping[tuple[str, int], tuple[Charge, ...]] = field(default_factory=dict)
    purposes: Mapping[str, str] = field(default_factory=dict)
    default_purpose: str = ""

    @classmethod
    def from_entries(
        cls, entries: Iterable[AuditEntry], purposes: Mapping[str, str] | None = None,
        default_purpose: str = "",
    ) -> ExportContext:
        """Index successful dp.charge events by (plan, round) and plan purposes by hash."""
        charges: dict[tuple[str, int], list[Charge]] = {}
        found_purposes = dict(purposes or {})
        for entry in entries:
            detail = entry.detail
            if entry.kind == "dp.charge" and entry.outcome == "0":
                key = (str(detail.get("plan_hash", "")), _int(detail.get("round")))
                charges.setdefault(key, []).append(Charge(
                    dataset=str(detail.get("dataset", "")), epsilon=_number(detail.get("epsilon")),
                    delta=_number(detail.get("delta")),
                    spent_total=_number(detail.get("epsilon_spent_total")),
                ))
            elif entry.kind.startswith("plan.") and detail.get("purpose"):
                plan = str(detail.get("plan_hash") or entry.entities.get("plan") or "")
                if plan:
                    found_purposes[plan] = str(detail["purpose"])
        return cls({k: tuple(v) for k, v in charges.items()}, found_purposes, default_purpose)


def pattern_of(entry: AuditEntry) -> Pattern:
    """Which BALP pattern an entry is exported as."""
    if entry.kind in DISCLOSURE_KINDS:
        return "privacy-disclosure"
    if entry.kind in AUTHENTICATION_KINDS:
        return "authentication-failure"
    return "basic"


def audit_event(entry: AuditEntry, context: ExportContext | None = None) -> dict[str, Any]:
    """The AuditEvent resource (JSON form) for one entry."""
    context = context or ExportContext()
    if entry.action not in R4_ACTIONS or entry.outcome not in R4_OUTCOMES:
        raise ReportError(
            f"entry {entry.index}: action {entry.action!r} / outcome {entry.outcome!r} are "
            "not FHIR R4 codes"
        )
    observer = {"identifier": {"system": NODE_SYSTEM, "value": entry.source}}
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": f"entry-{entry.index}",
        "type": dict(entry.type),
        "subtype": [dict(c) for c in entry.subtype],
        "action": entry.action,
        "recorded": entry.recorded,
        "outcome": entry.outcome,
        "agent": [_agent(agent) for agent in entry.agents],
        "source": {
            "site": entry.source,
            "observer": observer,
            "type": [{"system": SOURCE_TYPE_SYSTEM, "code": "4", "display": "Application Server"}],
        },
        "entity": _entities(entry),
    }
    reason = entry.detail.get("reason") or entry.detail.get("code")
    if entry.outcome != "0" and isinstance(reason, str) and reason:
        resource["outcomeDesc"] = reason
    pattern = pattern_of(entry)
    if pattern == "privacy-disclosure":
        _as_privacy_disclosure(resource, entry, context)
    elif pattern == "authentication-failure":
        resource["subtype"].insert(0, dict(LOGIN))
        resource["agent"].append(_source_agent(entry, requestor=False))
    return resource


def _agent(agent: Mapping[str, Any]) -> dict[str, Any]:
    who = str(agent.get("who"))
    element: dict[str, Any] = {
        "type": {"coding": [dict(HUMAN_USER if who.startswith("person:") else APPLICATION)]},
        "who": {"identifier": {"system": NODE_SYSTEM, "value": who}},
        "requestor": bool(agent.get("requestor")),
    }
    if who.startswith("person:"):
        element["who"]["display"] = who.split(":", 1)[1]
        element["name"] = who.split(":", 1)[1]
    return element


def _source_agent(entry: AuditEntry, *, requestor: bool) -> dict[str, Any]:
    """BALP `agent:source`: the node itself; `who` equals `source.observer` (val-audit-source).
    The log records node names, not addresses, so the network address is the node's name
    (type 1, machine name)."""
    return {
        "type": {"coding": [dict(SOURCE_ROLE)]},
        "who": {"identifier": {"system": NODE_SYSTEM, "value": entry.source}},
        "requestor": requestor,
        "network": {"address": entry.source, "type": "1"},
    }


def _as_privacy_disclosure(resource: dict[str, Any], entry: AuditEntry, context: ExportContext) -> None:
    """Shape `resource` as an IHE.BasicAudit.PrivacyDisclosure.Source event."""
    detail = entry.detail
    plan = str(detail.get("plan_hash") or entry.entities.get("plan") or "")
    round_ = _int(detail.get("round"))
    recipient, recipient_address, address_type = _recipient(entry)
    resource["meta"] = {"profile": [BALP_PRIVACY_DISCLOSURE_SOURCE]}
    resource["type"] = dict(EXPORT_TYPE)
    resource["action"] = "R"
    if not any(c.get("system") == LIFECYCLE_SYSTEM for c in resource["subtype"]):
        resource["subtype"].insert(0, dict(DISCLOSE))
    purpose = context.purposes.get(plan) or context.default_purpose
    resource["purposeOfEvent"] = [{"coding": [dict(RESEARCH)],
                                   **({"text": purpose} if purpose else {})}]
    resource["agent"] = [
        _source_agent(entry, requestor=True),
        {
            "type": {"coding": [dict(DESTINATION_ROLE)]},
            "who": {"identifier": {"system": NODE_SYSTEM, "value": recipient}, "display": recipient},
            "requestor": False,
            "network": {"address": recipient_address, "type": address_type},
        },
        {
            "type": {"coding": [dict(CUSTODIAN)]},
            "who": {"identifier": {"system": NODE_SYSTEM, "value": entry.source}},
            "requestor": False,
        },
    ] + [agent for agent in resource["agent"]
         if agent["who"]["identifier"]["value"] not in (entry.source, recipient)]
    charges = context.charges.get((plan, round_), ()) if entry.kind != "model.exported" else ()
    resource["entity"].insert(0, _data_entity(entry, plan, round_, charges))


def _recipient(entry: AuditEntry) -> tuple[str, str, str]:
    """Who received the release, its network address and FHIR network type (1 name, 5 URI)."""
    if entry.kind == "model.exported":
        path = str(entry.detail.get("path", ""))
        return ("coordinator (model export)", f"file://{path}" if path else "file:", "5")
    recipient = str(entry.detail.get("recipient") or "aggregator")
    return recipient, recipient, "1"


def _data_entity(
    entry: AuditEntry, plan: str, round_: int, charges: tuple[Charge, ...]
) -> dict[str, Any]:
    """BALP `entity:data`: what left, identified by its SHA-256 where the log has it, with
    the ε charged for that round (one detail per dataset charged)."""
    detail = entry.detail
    sha = str(detail.get("sha256") or "")
    if sha:
        what = {"identifier": {"system": PAYLOAD_SYSTEM, "value": sha}}
    else:
        what = {"identifier": {"system": RELEASE_SYSTEM,
                               "value": f"{entry.source}#{entry.index}"}}
    description = describe_release(entry)
    details: list[dict[str, str]] = [
        {"type": "plan_hash", "valueString": plan},
        {"type": "round", "valueString": str(round_)},
    ]
    if "bytes" in detail:
        details.append({"type": "bytes", "valueString": str(detail["bytes"])})
    if charges:
        for charge in charges:
            details += [
                {"type": "dataset", "valueString": charge.dataset},
                {"type": "epsilon", "valueString": charge.epsilon},
                {"type": "delta", "valueString": charge.delta},
                {"type": "epsilon_spent_total", "valueString": charge.spent_total},
            ]
    else:
        details.append({"type": "epsilon", "valueString": "not charged in this log for this round"})
    return {
        "what": what,
        "type": dict(SYSTEM_OBJECT),
        "name": "disclosed-data",
        "description": description,
        "detail": details,
    }


def describe_release(entry: AuditEntry) -> str:
    """A release in words, for the data entity and for the report's accounting."""
    detail = entry.detail
    plan = str(detail.get("plan_hash") or "")[:12]
    if entry.kind == "secagg.masked":
        return (f"Model update masked for secure aggregation session {detail.get('session', '?')} "
                f"(plan {plan}, round {detail.get('round', '?')}); only the sum over the cohort "
                "can be unmasked")
    if entry.kind == "model.exported":
        return f"Final trained model of plan {plan} exported to {detail.get('path', '?')}"
    kind = str(detail.get("kind", ""))
    words = _RELEASE_WORDS.get(kind, kind or "payload")
    return (f"{words[0].upper()}{words[1:]}, {detail.get('bytes', '?')} bytes "
            f"(plan {plan}, round {detail.get('round', '?')})")


def _entities(entry: AuditEntry) -> list[dict[str, Any]]:
    entities: list[dict[str, Any]] = [
        {
            "what": {"identifier": {"system": LOG_ENTRY_SYSTEM,
                                    "value": f"{entry.source}#{entry.index}"}},
            "name": "audit-log-entry",
        }
    ]
    for name, value in sorted(entry.entities.items()):
        element: dict[str, Any] = {"name": name}
        if value is not None:
            element["what"] = {"identifier": {"system": ENTITY_SYSTEM, "value": str(value)}}
        entities.append(element)
    if entry.detail:
        entities.append(
            {
                "name": "detail",
                "detail": [
                    {"type": key, "valueString": canonical_json(value).decode("utf-8")}
                    for key, value in sorted(entry.detail.items())
                ],
            }
        )
    return entities


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else -1


def _number(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return "?"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def validate_resource(document: Mapping[str, Any]) -> None:
    """Raise `ReportError` unless `document` (a Bundle or an AuditEvent) parses as R4."""
    from fhir.resources.R4B.auditevent import AuditEvent
    from fhir.resources.R4B.bundle import Bundle

    model = Bundle if document.get("resourceType") == "Bundle" else AuditEvent
    try:
        model.model_validate(dict(document))
    except ValidationError as exc:
        raise ReportError(f"FHIR export does not validate as R4: {exc}") from None


def bundle(data: ReportData) -> dict[str, Any]:
    """The collection Bundle of the period's AuditEvents, validated as FHIR R4."""
    context = ExportContext.from_entries(
        data.events, {p.plan_hash: p.purpose for p in data.plans if p.purpose},
        data.processing_record.purpose,
    )
    document = {
        "resourceType": "Bundle",
        "type": "collection",
        "timestamp": data.generated_at,
        "identifier": {
            "system": LOG_ENTRY_SYSTEM,
            "value": f"{data.origin} {data.period.start_text}/{data.period.end_text}",
        },
        "entry": [
            {
                "fullUrl": f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'{data.origin}#{e.index}')}",
                "resource": audit_event(e, context),
            }
            for e in data.events
        ],
    }
    validate_resource(document)
    return document


def render_fhir(data: ReportData) -> bytes:
    """The Bundle as indented UTF-8 JSON."""
    return (json.dumps(bundle(data), indent=2, ensure_ascii=False) + "\n").encode("utf-8")
