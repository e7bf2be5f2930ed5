"""FHIR AuditEvents per the IHE Basic Audit Log Patterns (BALP), from real logs.

Each release that leaves a site is exported as `IHE.BasicAudit.PrivacyDisclosure.Source`
(BALP 1.1.x, "Audit Event for Privacy Disclosure at Source"). Its required elements, as the
profile states them, are what `check_privacy_disclosure` checks:

* `meta.profile` names the profile (so a repository applies it);
* `type` = DCM 110106 "Export"; `subtype` has the slice `disclosure` = iso-21089-lifecycle
  "disclose" (1..1); `action` = R; `outcome` present (1..1);
* `purposeOfEvent` (must-support) present, here v3-ActReason HRESCH with the plan's purpose;
* `agent` 2..*: slice `source` (1..1, type DCM 110153 "Source Role ID", `who` and `network`
  required, invariant val-audit-source: `who` = `source.observer`); slice `recipient`
  (1..1, type DCM 110152 "Destination Role ID", `who` and `network` required); the custodian
  that released the data "should" be present (v3-ParticipationType CST) and is required here;
* `entity`: the set of data entity(ies) with `what`; BALP's patient entity is the documented
  deviation (a federated release is an aggregate; no patient is its subject), so the check
  instead requires that no entity pretends to be a patient;
* and, HealthFed's addition, the ε the privacy ledger charged for that round when the log
  holds the charge (`entity.detail` epsilon/dataset).

A refused connection is an authentication failure (ATNA's pattern under BALP): type DCM
110114 User Authentication, subtype DCM 110122 Login, outcome not 0 with `outcomeDesc`, the
requesting agent (who tried) and the node's source agent.

Every event (the BALP common base): type, subtype, action, recorded, outcome, `source.observer`
and at least one agent with `who` and `requestor`, exactly one of them the requestor.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from compliance_support import SteppingClock, open_log, write_processing_record

from compliance.export import export_report
from compliance.period import parse_period
from compliance.report import fhir

PLAN = "ab" * 32
MARCH = parse_period("2025-03-01", "2025-03-31")
DCM = "http://dicom.nema.org/resources/ontology/DCM"


def _code(coding: Any) -> tuple[str, str]:
    return (coding.get("system", ""), coding.get("code", ""))


def _agents_of_type(event: dict[str, Any], system: str, code: str) -> list[dict[str, Any]]:
    return [a for a in event.get("agent", [])
            if any(_code(c) == (system, code) for c in a.get("type", {}).get("coding", []))]


def check_basic(event: dict[str, Any]) -> list[str]:
    """BALP common base: the problems found (empty when conformant)."""
    problems = []
    for element in ("type", "subtype", "action", "recorded", "outcome", "source", "agent"):
        if not event.get(element):
            problems.append(f"{element} missing")
    if not event.get("source", {}).get("observer"):
        problems.append("source.observer missing")
    agents = event.get("agent", [])
    if any("who" not in a or "requestor" not in a for a in agents):
        problems.append("an agent lacks who/requestor")
    if sum(1 for a in agents if a.get("requestor")) != 1:
        problems.append("not exactly one requestor agent")
    return problems


def check_privacy_disclosure(event: dict[str, Any]) -> list[str]:
    """IHE.BasicAudit.PrivacyDisclosure.Source required elements (see module docstring)."""
    problems = check_basic(event)
    if fhir.BALP_PRIVACY_DISCLOSURE_SOURCE not in event.get("meta", {}).get("profile", []):
        problems.append("meta.profile does not name the BALP profile")
    if _code(event.get("type", {})) != (DCM, "110106"):
        problems.append("type is not DCM 110106 Export")
    disclose = [c for c in event.get("subtype", []) if _code(c) == (fhir.LIFECYCLE_SYSTEM, "disclose")]
    if len(disclose) != 1:
        problems.append("subtype:disclosure (iso-21089 disclose) is not present exactly once")
    if event.get("action") != "R":
        problems.append("action is not R")
    if not event.get("purposeOfEvent"):
        problems.append("purposeOfEvent missing")
    sources = _agents_of_type(event, DCM, "110153")
    recipients = _agents_of_type(event, DCM, "110152")
    custodians = _agents_of_type(event, fhir.PARTICIPATION_SYSTEM, "CST")
    if len(event.get("agent", [])) < 2:
        problems.append("fewer than 2 agents")
    if len(sources) != 1:
        problems.append("agent:source is not present exactly once")
    elif (not sources[0].get("network") or
          sources[0].get("who") != event.get("source", {}).get("observer")):
        problems.append("agent:source lacks network or who != source.observer (val-audit-source)")
    if len(recipients) != 1:
        problems.append("agent:recipient is not present exactly once")
    elif not recipients[0].get("who") or not recipients[0].get("network"):
        problems.append("agent:recipient lacks who or network")
    if len(custodians) != 1:
        problems.append("custodian agent missing")
    data = [e for e in event.get("entity", []) if e.get("name") == "disclosed-data"]
    if len(data) != 1 or not data[0].get("what") or not data[0].get("description"):
        problems.append("no data entity with what and description")
    elif not any(d.get("type") == "epsilon" for d in data[0].get("detail", [])):
        problems.append("data entity does not state the epsilon")
    if any((e.get("role") or {}).get("coding", [{}])[0].get("code") == "1" for e in event.get("entity", [])):
        problems.append("an entity claims to be a patient")
    return problems


def check_authentication_failure(event: dict[str, Any]) -> list[str]:
    """ATNA/BALP authentication failure (see module docstring)."""
    problems = check_basic(event)
    if _code(event.get("type", {})) != (DCM, "110114"):
        problems.append("type is not DCM 110114 User Authentication")
    if not any(_code(c) == (DCM, "110122") for c in event.get("subtype", [])):
        problems.append("subtype Login missing")
    if event.get("outcome") == "0" or not event.get("outcomeDesc"):
        problems.append("a failure needs a non-zero outcome and outcomeDesc")
    if len(_agents_of_type(event, DCM, "110153")) != 1:
        problems.append("the node's source agent is missing")
    return problems


CHECKS = {
    "privacy-disclosure": check_privacy_disclosure,
    "authentication-failure": check_authentication_failure,
    "basic": check_basic,
}


def _silo_run(node: Path) -> None:
    """A silo's real event sequence for two DP rounds under secure aggregation, an
    evaluation, a refused connection and people's decisions."""
    with open_log(node, SteppingClock()) as log:
        log.record("dataset.registered", actor="person:Ian T. Admin", entities={"dataset": "heart"},
                   detail={"records": 303, "policy_sha256": "cd" * 32, "dropped": ["ssn"]})
        log.record("plan.approved", actor="person:Dr. A. Jones", entities={"plan": PLAN},
                   detail={"plan_hash": PLAN, "name": "heart-lr", "purpose": "Cardiac risk research",
                           "epsilon": 3.0, "delta": 1e-5})
        total = 0.0
        for r in (1, 2):
            total += 1.5
            log.record("dp.charge", actor="silo:st-marys", entities={"dataset": "heart"},
                       detail={"dataset": "heart", "plan_hash": PLAN, "round": r, "epsilon": 1.5,
                               "delta": 1e-5, "epsilon_spent_total": total, "epsilon_budget": 3.0,
                               "delta_budget": 1e-5})
            log.record("payload.released", actor="silo:st-marys", entities={"plan": PLAN},
                       detail={"plan_hash": PLAN, "round": r, "kind": "TrainResult", "bytes": 900 + r,
                               "sha256": f"{r:02x}" * 32, "recipient": "aggregator"})
            log.record("secagg.masked", actor="silo:st-marys",
                       detail={"plan_hash": PLAN, "round": r, "session": "0f" * 8})
            log.record("payload.released", actor="silo:st-marys", entities={"plan": PLAN},
                       detail={"plan_hash": PLAN, "round": r, "kind": "SecAggReply", "bytes": 40960,
                               "sha256": f"{r + 10:02x}" * 32, "recipient": "aggregator"})
        log.record("payload.released", actor="silo:st-marys", entities={"plan": PLAN},
                   detail={"plan_hash": PLAN, "round": 0, "kind": "EvaluateResult", "bytes": 120,
                           "sha256": "ee" * 32, "recipient": "aggregator"})
        log.record("connection.refused", actor="peer:unknown", outcome="serious_failure",
                   requestor=True, detail={"code": "CERTIFICATE_REVOKED", "reason": "certificate revoked"})


def _export(node: Path, out: Path) -> dict[str, Any]:
    write_processing_record(node)
    clock = SteppingClock(datetime(2025, 4, 2, 9, 0, tzinfo=timezone.utc))
    export_report(node, MARCH, "fhir", out, actor="person:Carol Officer", clock=clock)
    return json.loads(out.read_text(encoding="utf-8"))


def _aggregator_run(node: Path) -> None:
    with open_log(node, SteppingClock(), origin="aggregator") as log:
        log.record("round.completed", actor="aggregator",
                   detail={"plan_hash": PLAN, "round": 1, "silos": ["st-marys", "riverside"]})
        log.record("model.exported", actor="aggregator",
                   detail={"plan_hash": PLAN, "path": "/runs/plan1/saved_model"})


def test_every_exported_resource_parses_with_the_fhir_library(tmp_path: Path) -> None:
    from fhir.resources.R4B.auditevent import AuditEvent
    from fhir.resources.R4B.bundle import Bundle

    for name, run in (("silo", _silo_run), ("aggregator", _aggregator_run)):
        node = tmp_path / name
        run(node)
        document = _export(node, tmp_path / f"{name}.json")
        parsed = Bundle.model_validate(document)
        assert parsed.type == "collection" and parsed.entry
        for item in document["entry"]:
            event = AuditEvent.model_validate(item["resource"])
            assert event.agent and event.source.observer is not None


def test_balp_required_elements_per_pattern(tmp_path: Path) -> None:
    node = tmp_path / "silo"
    _silo_run(node)
    events = [e["resource"] for e in _export(node, tmp_path / "silo.json")["entry"]]
    aggregator = tmp_path / "aggregator"
    _aggregator_run(aggregator)
    events += [e["resource"] for e in _export(aggregator, tmp_path / "agg.json")["entry"]]
    seen: dict[str, int] = {}
    for event in events:
        kind = event["subtype"][-1]["code"]
        pattern = "privacy-disclosure" if kind in fhir.DISCLOSURE_KINDS else (
            "authentication-failure" if kind == "connection.refused" else "basic")
        seen[pattern] = seen.get(pattern, 0) + 1
        assert CHECKS[pattern](event) == [], (kind, CHECKS[pattern](event))
    # 5 payload.released + 2 secagg.masked on the silo, model.exported on the aggregator
    assert seen["privacy-disclosure"] == 8
    assert seen["authentication-failure"] == 1


def test_disclosures_carry_recipient_purpose_and_the_epsilon_of_their_round(tmp_path: Path) -> None:
    node = tmp_path / "silo"
    _silo_run(node)
    events = [e["resource"] for e in _export(node, tmp_path / "silo.json")["entry"]]
    train = [e for e in events if any(
        ent.get("description", "").startswith("Training result") for ent in e["entity"])]
    assert len(train) == 2
    for round_, event in enumerate(train, 1):
        data = next(ent for ent in event["entity"] if ent["name"] == "disclosed-data")
        details = {d["type"]: d["valueString"] for d in data["detail"]}
        assert details["round"] == str(round_)
        assert details["epsilon"] == "1.5" and details["dataset"] == "heart"
        assert details["epsilon_spent_total"] == f"{1.5 * round_:g}"
        assert data["what"]["identifier"]["value"] == f"{round_:02x}" * 32
        recipient = _agents_of_type(event, DCM, "110152")[0]
        assert recipient["who"]["identifier"]["value"] == "aggregator"
        assert event["purposeOfEvent"][0]["text"] == "Cardiac risk research"
        assert event["purposeOfEvent"][0]["coding"][0]["code"] == "HRESCH"
    evaluation = next(e for e in events if any(
        "Evaluation result" in ent.get("description", "") for ent in e["entity"]))
    data = next(ent for ent in evaluation["entity"] if ent["name"] == "disclosed-data")
    assert {"type": "epsilon", "valueString": "not charged in this log for this round"} in data["detail"]


def test_people_are_named_as_human_agents(tmp_path: Path) -> None:
    node = tmp_path / "silo"
    _silo_run(node)
    events = [e["resource"] for e in _export(node, tmp_path / "silo.json")["entry"]]
    approval = next(e for e in events if e["subtype"][-1]["code"] == "plan.approved")
    agent = approval["agent"][0]
    assert agent["who"]["display"] == "Dr. A. Jones" and agent["requestor"] is True
    assert agent["type"]["coding"][0]["code"] == "humanuser"


@pytest.mark.parametrize("remove", ["recipient", "source-network", "purpose", "epsilon", "custodian"])
def test_the_balp_check_fails_on_a_non_conformant_disclosure(tmp_path: Path, remove: str) -> None:
    """The checker is not vacuous: each required element taken out of a real disclosure
    event is reported."""
    node = tmp_path / "silo"
    _silo_run(node)
    events = [e["resource"] for e in _export(node, tmp_path / "silo.json")["entry"]]
    event = next(e for e in events if e.get("meta"))
    assert check_privacy_disclosure(event) == []
    if remove == "recipient":
        event["agent"] = [a for a in event["agent"] if not _agents_of_type({"agent": [a]}, DCM, "110152")]
    elif remove == "source-network":
        _agents_of_type(event, DCM, "110153")[0].pop("network")
    elif remove == "purpose":
        event.pop("purposeOfEvent")
    elif remove == "custodian":
        event["agent"] = [a for a in event["agent"]
                          if not _agents_of_type({"agent": [a]}, fhir.PARTICIPATION_SYSTEM, "CST")]
    else:
        data = next(ent for ent in event["entity"] if ent["name"] == "disclosed-data")
        data["detail"] = [d for d in data["detail"] if d["type"] != "epsilon"]
    assert check_privacy_disclosure(event) != []
