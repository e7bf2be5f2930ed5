"""Helpers: real audit logs on disk (SQLite + Ed25519), written through the public API."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from compliance.audit_log import AuditLog

ORIGIN = "silo:st-marys"
START = datetime(2025, 3, 1, 8, 0, tzinfo=timezone.utc)


class SteppingClock:
    """A deterministic clock: each reading is `step` later than the previous one, so events
    land on known dates without sleeping."""

    def __init__(self, start: datetime = START, step: timedelta = timedelta(hours=6)) -> None:
        self.now = start
        self.step = step

    def __call__(self) -> datetime:
        moment = self.now
        self.now += self.step
        return moment


def open_log(node: Path, clock: SteppingClock | None = None, origin: str = ORIGIN) -> AuditLog:
    """Open the log of a node state directory the way the silo node does."""
    return AuditLog.open(
        node / "audit" / "audit.sqlite3", node / "audit" / "signing.key", origin, clock=clock
    )


def charge(dataset: str, round_: int, epsilon: float, total: float) -> dict[str, object]:
    """A dp.charge detail following the convention in compliance.events."""
    return {
        "dataset": dataset,
        "plan_hash": "ab" * 32,
        "round": round_,
        "epsilon": epsilon,
        "delta": 1e-6,
        "epsilon_spent_total": total,
        "epsilon_budget": 8.0,
        "delta_budget": 1e-5,
    }


def populate(log: AuditLog, rounds: int = 3) -> None:
    """A realistic silo history: enrolment, dataset, plan review, rounds with DP charges and
    releases, a refused connection and a refused round."""
    plan = "ab" * 32
    log.record("certificate.issued", actor="ca:federation", requestor=False,
               entities={"certificate": "serial-01"})
    log.record("dataset.registered", actor="steward:alice", entities={"dataset": "icu-2023"})
    log.record("dataset.deidentified", actor="silo:st-marys", requestor=False,
               entities={"dataset": "icu-2023"}, detail={"method": "safe-harbor"})
    log.record("plan.received", actor="aggregator", requestor=False, entities={"plan": plan})
    log.record("plan.approved", actor="steward:alice", entities={"plan": plan})
    total = 0.0
    for r in range(1, rounds + 1):
        total += 0.75
        log.record("round.joined", actor="silo:st-marys", detail={"plan_hash": plan, "round": r})
        log.record("dp.charge", actor="silo:st-marys", entities={"dataset": "icu-2023"},
                   detail=charge("icu-2023", r, 0.75, total))
        log.record("payload.released", actor="silo:st-marys", entities={"plan": plan},
                   detail={"plan_hash": plan, "round": r, "kind": "masked_update",
                           "bytes": 40960 + r, "sha256": f"{r:02x}" * 32,
                           "recipient": "aggregator"})
    log.record("connection.refused", actor="peer:unknown", outcome="serious_failure",
               detail={"reason": "certificate revoked"})
    log.record("round.refused", actor="silo:st-marys", outcome="minor_failure",
               detail={"plan_hash": plan, "round": rounds + 1, "reason": "budget exhausted"})


PROCESSING_RECORD = """\
controller:
  name: St Mary's Hospital NHS Trust
  contact: dpo@st-marys.example
  dpo_contact: Data Protection Officer, dpo@st-marys.example
purpose: Federated training of a sepsis early-warning model (research, Art. 9(2)(j))
data_subject_categories: [adult ICU patients]
data_categories: [vital signs, laboratory results, age band]
recipients: [HealthFed aggregator (masked model updates only)]
retention: Audit records 6 years; model updates are not retained by the silo
security_measures: [mTLS with federation CA, secure aggregation, record-level DP-SGD]
transfers:
  - destination: Research partner, Geneva (CH)
    safeguards: EU adequacy decision for Switzerland
"""


def write_processing_record(node: Path, text: str = PROCESSING_RECORD) -> Path:
    """Put a GDPR Art. 30 record in the node directory."""
    path = node / "processing-record.yaml"
    path.write_text(text, encoding="utf-8")
    return path
