"""One audit entry: the canonical-JSON document hashed into the Merkle tree.

Why the entry carries its FHIR fields (type, subtype, action, outcome code) and its own
index, rather than just a kind: the entry is evidence on its own — a regulator reading one
row needs no code table of ours to understand it — and an entry moved to another position
contradicts its own `index`, which names the first bad position precisely.

Shape (version 1)::

    {"v": 1, "index": 17, "kind": "dp.charge",
     "type": {system, code, display}, "subtype": [{system, code, display}, ...],
     "action": "U", "recorded": "2025-03-01T09:30:00.000000Z", "outcome": "0",
     "agents": [{"who": "steward:alice", "requestor": true}],
     "source": "silo:st-marys", "entities": {"dataset": "icu-2023"}, "detail": {...}}
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

from compliance.clock import format_timestamp, parse_timestamp
from compliance.errors import InvalidEvent
from compliance.event_details import check_detail
from compliance.events import OUTCOMES, event_kind, outcome_code
from healthfed_common.canonical_json import NonCanonicalValue, canonical_json

ENTRY_VERSION = 1
EntityValue = str | int | float | None
_OUTCOME_NAMES = {code: name for name, code in OUTCOMES.items()}


def validate_event(
    kind: str,
    actor: str,
    outcome: str,
    requestor: bool,
    entities: Mapping[str, EntityValue] | None,
    detail: Mapping[str, Any] | None,
) -> tuple[dict[str, EntityValue], dict[str, Any]]:
    """Check an event's caller-supplied fields; return entities and detail as plain dicts.

    Done before any transaction starts, so a bad event never touches the log.
    """
    event_kind(kind)
    outcome_code(outcome)
    if not isinstance(actor, str) or not actor.strip():
        raise InvalidEvent(f"{kind} event: actor must be a non-empty string, not {actor!r}")
    if not isinstance(requestor, bool):
        raise InvalidEvent(f"{kind} event: requestor must be True or False")
    plain_entities: dict[str, EntityValue] = {}
    for name, value in (entities or {}).items():
        if not isinstance(name, str) or not name:
            raise InvalidEvent(f"{kind} event: entity name {name!r} must be a non-empty string")
        if value is not None and not isinstance(value, (str, int, float)):
            raise InvalidEvent(
                f"{kind} event: entities.{name} must be a string, number or None, "
                f"not {type(value).__name__}"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidEvent(f"{kind} event: entities.{name} is {value}, not a finite number")
        plain_entities[name] = value
    plain_detail = dict(detail or {})
    check_detail(kind, plain_detail)
    try:
        canonical_json(plain_detail)
    except (NonCanonicalValue, TypeError, ValueError) as exc:
        raise InvalidEvent(f"{kind} event: detail has no canonical JSON form: {exc}") from None
    return plain_entities, plain_detail


def build_entry(
    index: int,
    kind: str,
    *,
    origin: str,
    actor: str,
    outcome: str,
    requestor: bool,
    entities: Mapping[str, EntityValue],
    detail: Mapping[str, Any],
    moment: datetime,
) -> bytes:
    """The canonical bytes of entry `index` (fields already checked by `validate_event`)."""
    definition = event_kind(kind)
    document = {
        "v": ENTRY_VERSION,
        "index": index,
        "kind": kind,
        "type": definition.type.to_dict(),
        "subtype": [coding.to_dict() for coding in definition.subtypes],
        "action": definition.action,
        "recorded": format_timestamp(moment),
        "outcome": outcome_code(outcome),
        "agents": [{"who": actor, "requestor": requestor}],
        "source": origin,
        "entities": dict(entities),
        "detail": dict(detail),
    }
    return canonical_json(document)


@dataclass(frozen=True)
class AuditEntry:
    """A parsed entry, for reports and listings (verification judges the raw bytes)."""

    index: int
    kind: str
    type: Mapping[str, str]
    subtype: tuple[Mapping[str, str], ...]
    action: str
    recorded: str
    outcome: str
    agents: tuple[Mapping[str, Any], ...]
    source: str
    entities: Mapping[str, EntityValue]
    detail: Mapping[str, Any] = field(default_factory=dict)

    @property
    def recorded_at(self) -> datetime:
        """`recorded` as an aware UTC datetime."""
        return parse_timestamp(self.recorded)

    @property
    def outcome_name(self) -> str:
        """success / minor_failure / serious_failure / major_failure."""
        return _OUTCOME_NAMES.get(self.outcome, f"unknown({self.outcome})")

    @property
    def actor(self) -> str:
        """The requesting agent (the first agent if none is flagged)."""
        for agent in self.agents:
            if agent.get("requestor"):
                return str(agent.get("who"))
        return str(self.agents[0].get("who")) if self.agents else ""

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "entry") -> AuditEntry:
        """Parse stored bytes; raise `InvalidEvent` naming `where` and the bad field."""
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise InvalidEvent(f"{where} is not UTF-8 JSON") from None
        if not isinstance(doc, dict):
            raise InvalidEvent(f"{where} is not a JSON object")
        if doc.get("v") != ENTRY_VERSION:
            raise InvalidEvent(f"{where} has entry version {doc.get('v')!r}, expected 1")
        entry = cls(
            index=_typed(doc, "index", int, where),
            kind=_typed(doc, "kind", str, where),
            type=_typed(doc, "type", dict, where),
            subtype=tuple(_typed(doc, "subtype", list, where)),
            action=_typed(doc, "action", str, where),
            recorded=_typed(doc, "recorded", str, where),
            outcome=_typed(doc, "outcome", str, where),
            agents=tuple(_typed(doc, "agents", list, where)),
            source=_typed(doc, "source", str, where),
            entities=_typed(doc, "entities", dict, where),
            detail=_typed(doc, "detail", dict, where),
        )
        try:
            parse_timestamp(entry.recorded)
        except ValueError:
            raise InvalidEvent(f"{where}: recorded {entry.recorded!r} is not RFC 3339 UTC") from None
        return entry


def _typed(doc: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = doc.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidEvent(f"{where}: field {key!r} missing or not a {kind.__name__}")
    return value
