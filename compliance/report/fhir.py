"""FHIR R4 export: a Bundle (type collection) of AuditEvent resources, one per log entry in
the period, validated with the `fhir.resources` R4B models (R4B's AuditEvent is R4's).

Why validate here rather than trust our own mapping: a hospital will load this into its
FHIR server or ATNA repository; a structurally invalid resource would be rejected there,
long after the officer has left. `fhir.resources` checks structure, not terminology, so the
coded values we emit (action, outcome) are checked against their R4 value sets as well.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from pydantic import ValidationError

from compliance.entry import AuditEntry
from compliance.errors import ReportError
from compliance.report.data import ReportData
from healthfed_common.canonical_json import canonical_json

NODE_SYSTEM = "https://healthfed.org/fhir/NamingSystem/node"
ENTITY_SYSTEM = "https://healthfed.org/fhir/NamingSystem/entity"
LOG_ENTRY_SYSTEM = "https://healthfed.org/fhir/NamingSystem/audit-log-entry"
SOURCE_TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/security-source-type"
R4_ACTIONS = frozenset({"C", "R", "U", "D", "E"})
R4_OUTCOMES = frozenset({"0", "4", "8", "12"})
_NAMESPACE = uuid.UUID("6f1d3f1e-2b9e-4c55-9a53-4a3d0f4c8e21")


def audit_event(entry: AuditEntry) -> dict[str, Any]:
    """The AuditEvent resource (JSON form) for one entry."""
    if entry.action not in R4_ACTIONS or entry.outcome not in R4_OUTCOMES:
        raise ReportError(
            f"entry {entry.index}: action {entry.action!r} / outcome {entry.outcome!r} are "
            "not FHIR R4 codes"
        )
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "id": f"entry-{entry.index}",
        "type": dict(entry.type),
        "subtype": [dict(c) for c in entry.subtype],
        "action": entry.action,
        "recorded": entry.recorded,
        "outcome": entry.outcome,
        "agent": [
            {
                "who": {"identifier": {"system": NODE_SYSTEM, "value": str(agent.get("who"))}},
                "requestor": bool(agent.get("requestor")),
            }
            for agent in entry.agents
        ],
        "source": {
            "site": entry.source,
            "observer": {"identifier": {"system": NODE_SYSTEM, "value": entry.source}},
            "type": [{"system": SOURCE_TYPE_SYSTEM, "code": "4", "display": "Application Server"}],
        },
        "entity": _entities(entry),
    }
    reason = entry.detail.get("reason")
    if entry.outcome != "0" and isinstance(reason, str) and reason:
        resource["outcomeDesc"] = reason
    return resource


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


def bundle(data: ReportData) -> dict[str, Any]:
    """The collection Bundle of the period's AuditEvents, validated as FHIR R4."""
    from fhir.resources.R4B.bundle import Bundle

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
                "resource": audit_event(e),
            }
            for e in data.events
        ],
    }
    try:
        Bundle.model_validate(document)
    except ValidationError as exc:
        raise ReportError(f"FHIR export does not validate as R4: {exc}") from None
    return document


def render_fhir(data: ReportData) -> bytes:
    """The Bundle as indented UTF-8 JSON."""
    return (json.dumps(bundle(data), indent=2, ensure_ascii=False) + "\n").encode("utf-8")
