"""Everything an audit report says, computed once from a verified log, for every format.

Why one model: the PDF, HTML, CSV and FHIR outputs must never disagree about what happened;
renderers only lay out `ReportData`, they compute nothing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError

from compliance.checkpoints import SignedCheckpoint
from compliance.clock import format_timestamp
from compliance.entry import AuditEntry
from compliance.event_details import DpChargeDetail, PayloadReleasedDetail, RoundDetail
from compliance.events import EVENT_KINDS, REFUSAL_KINDS
from compliance.merkle import verify_consistency, verify_inclusion
from compliance.period import Period
from compliance.processing_record import ProcessingRecord
from compliance.verify import VerificationResult

SECTIONS = (
    "Scope and period",
    "Integrity evidence",
    "Events by type, outcome and actor",
    "Refusals and security events",
    "Privacy budget by dataset",
    "Rounds and participants",
    "GDPR Art. 30 record of processing",
    "HIPAA accounting of disclosures",
)
"""Section titles, in order; every format carries each one (tests check the PDF text)."""


@dataclass(frozen=True)
class Proof:
    """A Merkle proof shown as evidence, with whether it verified when the report was made."""

    label: str
    hashes: tuple[str, ...]
    verified: bool


@dataclass(frozen=True)
class Integrity:
    """The verification result and the evidence a reader can re-check independently."""

    verified: bool
    summary: str
    first_bad_index: int | None
    key_fingerprint: str
    key_source: str
    latest: SignedCheckpoint | None
    proofs: tuple[Proof, ...]


@dataclass(frozen=True)
class Listed:
    """An event listed in the refusals/security section, with why it is listed."""

    entry: AuditEntry
    why: str


@dataclass(frozen=True)
class DatasetPrivacy:
    """Privacy spent on one dataset as of the end of the period (from dp.charge events)."""

    dataset: str
    epsilon_spent: float
    epsilon_budget: float
    delta_budget: float
    largest_delta: float
    charges_in_period: int
    series: tuple[tuple[datetime, float], ...]

    @property
    def epsilon_remaining(self) -> float:
        """Budget minus spent; negative means the budget was exceeded."""
        return self.epsilon_budget - self.epsilon_spent


@dataclass(frozen=True)
class RoundRow:
    """One (plan, round) as this node saw it."""

    plan_hash: str
    round: int
    status: str
    participants: tuple[str, ...]
    reasons: tuple[str, ...]
    first_recorded: str


@dataclass(frozen=True)
class Disclosure:
    """One payload.released event: what left, when, to whom."""

    index: int
    recorded: str
    recipient: str
    kind: str
    bytes: int
    sha256: str
    plan_hash: str
    round: int


@dataclass(frozen=True)
class ReportData:
    """The content of one audit report."""

    origin: str
    node_dir: str
    db_path: str
    generated_at: str
    period: Period
    log_size: int
    integrity: Integrity
    events: tuple[AuditEntry, ...]
    by_kind: tuple[tuple[str, int], ...]
    by_outcome: tuple[tuple[str, int], ...]
    by_actor: tuple[tuple[str, int], ...]
    flagged: tuple[Listed, ...]
    privacy: tuple[DatasetPrivacy, ...]
    rounds: tuple[RoundRow, ...]
    processing_record: ProcessingRecord
    disclosures: tuple[Disclosure, ...]


def build_report_data(
    *,
    origin: str,
    node_dir: Path,
    result: VerificationResult,
    key_source: str,
    record: ProcessingRecord,
    period: Period,
    generated_at: datetime,
) -> ReportData:
    """Compute the report from a verification result (which carries the parsed entries)."""
    entries = result.parsed
    in_period = tuple(e for e in entries if period.contains(e.recorded_at))
    return ReportData(
        origin=origin,
        node_dir=str(node_dir),
        db_path=str(result.db_path),
        generated_at=format_timestamp(generated_at),
        period=period,
        log_size=result.entries,
        integrity=_integrity(result, key_source, in_period),
        events=in_period,
        by_kind=_counted(e.kind for e in in_period),
        by_outcome=_counted(e.outcome_name for e in in_period),
        by_actor=_counted(e.actor for e in in_period),
        flagged=tuple(_flagged(in_period)),
        privacy=_privacy(entries, period),
        rounds=_rounds(in_period),
        processing_record=record,
        disclosures=tuple(_disclosures(in_period)),
    )


def _counted(values: object) -> tuple[tuple[str, int], ...]:
    counts = Counter(values)  # type: ignore[call-overload]
    return tuple(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def _integrity(
    result: VerificationResult, key_source: str, in_period: tuple[AuditEntry, ...]
) -> Integrity:
    """Proofs a reader can re-check with any RFC 9162 implementation: inclusion of the
    period's first and last events in the latest checkpoint, and consistency of that
    checkpoint with the tree as it stood when the period began."""
    latest = result.latest if result.ok else None
    proofs: list[Proof] = []
    if latest is not None and latest.size:
        tree = result.tree
        root = latest.root
        shown = sorted({e.index for e in (in_period[:1] + in_period[-1:])})
        for index in (i for i in shown if i < latest.size):
            path = tree.inclusion_proof(index, latest.size)
            verify_inclusion(tree.leaf_hash_at(index), index, latest.size, path, root)
            proofs.append(
                Proof(
                    f"inclusion of entry {index} (leaf hash {tree.leaf_hash_at(index).hex()}) "
                    f"in the tree of size {latest.size}",
                    tuple(h.hex() for h in path),
                    True,
                )
            )
        old_size = in_period[0].index if in_period else latest.size
        if 0 < old_size < latest.size:
            path = tree.consistency_proof(old_size, latest.size)
            verify_consistency(old_size, latest.size, tree.root(old_size), root, path)
            proofs.append(
                Proof(
                    f"consistency of the tree of size {old_size} (root "
                    f"{tree.root(old_size).hex()}) with size {latest.size}",
                    tuple(h.hex() for h in path),
                    True,
                )
            )
    return Integrity(
        verified=result.ok,
        summary=result.summary(),
        first_bad_index=None if result.problem is None else result.problem.index,
        key_fingerprint=result.trusted_key_fingerprint,
        key_source=key_source,
        latest=result.latest,
        proofs=tuple(proofs),
    )


def _flagged(entries: tuple[AuditEntry, ...]) -> list[Listed]:
    listed = []
    for entry in entries:
        reasons = []
        if entry.kind in REFUSAL_KINDS:
            reasons.append("refusal")
        kind = EVENT_KINDS.get(entry.kind)
        if kind is not None and kind.category == "security":
            reasons.append("security event")
        if entry.outcome_name != "success":
            reasons.append(f"outcome {entry.outcome_name.replace('_', ' ')}")
        if reasons:
            listed.append(Listed(entry, ", ".join(dict.fromkeys(reasons))))
    return listed


def _privacy(entries: list[AuditEntry], period: Period) -> tuple[DatasetPrivacy, ...]:
    """Charges up to the end of the period (spent is cumulative, so earlier charges count)."""
    charges: dict[str, list[tuple[datetime, DpChargeDetail]]] = {}
    for entry in entries:
        if entry.kind != "dp.charge" or entry.recorded_at >= period.end:
            continue
        detail = _detail(DpChargeDetail, entry)
        if detail is None:
            continue
        charges.setdefault(detail.dataset, []).append((entry.recorded_at, detail))
    rows = []
    for dataset in sorted(charges):
        series = sorted(charges[dataset], key=lambda item: item[0])
        last = series[-1][1]
        rows.append(
            DatasetPrivacy(
                dataset=dataset,
                epsilon_spent=last.epsilon_spent_total,
                epsilon_budget=last.epsilon_budget,
                delta_budget=last.delta_budget,
                largest_delta=max(d.delta for _, d in series),
                charges_in_period=sum(1 for t, _ in series if period.contains(t)),
                series=tuple((t, d.epsilon_spent_total) for t, d in series),
            )
        )
    return tuple(rows)


_STATUS_ORDER = {"round.completed": 3, "round.joined": 2, "round.refused": 1}


def _rounds(entries: tuple[AuditEntry, ...]) -> tuple[RoundRow, ...]:
    grouped: dict[tuple[str, int], list[tuple[AuditEntry, RoundDetail]]] = {}
    for entry in entries:
        if entry.kind in _STATUS_ORDER:
            detail = _detail(RoundDetail, entry)
            if detail is None:
                continue
            grouped.setdefault((detail.plan_hash, detail.round), []).append((entry, detail))
    rows = []
    for (plan_hash, round_), items in grouped.items():  # insertion order = first event order
        participants: dict[str, None] = {}
        for entry, detail in items:
            for silo in detail.silos or ([entry.actor] if entry.kind == "round.joined" else []):
                participants[silo] = None
        best = max(items, key=lambda item: _STATUS_ORDER[item[0].kind])[0].kind
        rows.append(
            RoundRow(
                plan_hash=plan_hash,
                round=round_,
                status=best.split(".", 1)[1],
                participants=tuple(participants),
                reasons=tuple(d.reason for _, d in items if d.reason),
                first_recorded=items[0][0].recorded,
            )
        )
    return tuple(rows)


def _disclosures(entries: tuple[AuditEntry, ...]) -> list[Disclosure]:
    out = []
    for entry in entries:
        if entry.kind != "payload.released":
            continue
        detail = _detail(PayloadReleasedDetail, entry)
        if detail is None:
            continue
        out.append(
            Disclosure(
                index=entry.index,
                recorded=entry.recorded,
                recipient=detail.recipient,
                kind=detail.kind,
                bytes=detail.bytes,
                sha256=detail.sha256,
                plan_hash=detail.plan_hash,
                round=detail.round,
            )
        )
    return out


_Model = TypeVar("_Model", DpChargeDetail, PayloadReleasedDetail, RoundDetail)


def _detail(model: type[_Model], entry: AuditEntry) -> _Model | None:
    """The typed detail, or None for an entry that breaks its convention — possible only in
    a log that failed verification, whose report already says so."""
    try:
        return model.model_validate(dict(entry.detail))
    except ValidationError:
        return None
