"""Everything an audit report says, computed once from a verified log, for every format.

Why one model: the PDF, HTML, CSV and FHIR outputs must never disagree about what happened;
renderers only lay out `ReportData`, they compute nothing.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, TypeVar

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
    "Executive summary",
    "Scope and period",
    "HIPAA accounting of disclosures",
    "Privacy budget by dataset",
    "Plans and approvals",
    "Datasets and de-identification",
    "Rounds and participants",
    "Refusals and security events",
    "Events by type, outcome and actor",
    "GDPR Art. 30 record of processing",
    "Annex: data protection impact assessment (GDPR Art. 35)",
    "Appendix: integrity evidence",
)
"""Section titles, in order; every format carries each one (tests check the PDF text).
What a DPO signs for comes first; the Merkle proofs and signatures that back it are the
appendix (an auditor re-checks them, a DPO need not read hex)."""


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
    """One release (payload.released, or model.exported on the aggregator): what left, when,
    to whom, why, and the privacy it cost — one row of a HIPAA §164.528 accounting."""

    index: int
    recorded: str
    recipient: str
    kind: str
    bytes: int
    sha256: str
    plan_hash: str
    round: int
    description: str = ""
    purpose: str = ""
    privacy: str = ""
    """The ε charged for this round, in words, or why none was charged."""


@dataclass(frozen=True)
class DeclaredSpending:
    """What one silo declared it had spent on a plan's dataset (aggregator reports only)."""

    plan_hash: str
    plan_name: str
    silo: str
    round: int
    epsilon_spent: float | None
    epsilon_remaining: float | None
    delta: float | None


@dataclass(frozen=True)
class PlanRow:
    """A plan as its decisions left it by the end of the period (plan.* events)."""

    plan_hash: str
    name: str
    purpose: str
    status: str
    decided_by: str
    decided_at: str
    expires_at: str
    epsilon: str
    cohort: str


@dataclass(frozen=True)
class DatasetRow:
    """A dataset as its registration events left it (dataset.registered/removed)."""

    name: str
    status: str
    by: str
    at: str
    records: str
    policy_sha256: str
    dropped: str
    generalised: str


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
    plans: tuple[PlanRow, ...] = ()
    datasets: tuple[DatasetRow, ...] = ()
    exported_by: str = ""
    rollback: str = ""
    declared: tuple[DeclaredSpending, ...] = ()
    declared_source: str = ""
    """Where `declared` came from, or why it could not be read ("" for silo reports)."""

    @property
    def verdict(self) -> str:
        """VERIFIED or FAILED: the one word every page title carries."""
        return "VERIFIED" if self.integrity.verified else "FAILED"

    @property
    def refusals(self) -> tuple[Listed, ...]:
        """Flagged events that are refusals (not merely security events)."""
        return tuple(item for item in self.flagged if "refusal" in item.why)


def build_report_data(
    *,
    origin: str,
    node_dir: Path,
    result: VerificationResult,
    key_source: str,
    record: ProcessingRecord,
    period: Period,
    generated_at: datetime,
    exported_by: str = "",
    declared: tuple[DeclaredSpending, ...] = (),
    declared_source: str = "",
) -> ReportData:
    """Compute the report from a verification result (which carries the parsed entries)."""
    entries = result.parsed
    in_period = tuple(e for e in entries if period.contains(e.recorded_at))
    up_to_end = [e for e in entries if e.recorded_at < period.end]
    plans = _plans(up_to_end)
    if not declared and not declared_source and origin.startswith("aggregator"):
        from compliance.report.declarations import read_declarations

        declared, declared_source = read_declarations(node_dir)
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
        disclosures=tuple(_disclosures(in_period, up_to_end, plans, record.purpose)),
        plans=plans,
        datasets=_datasets(up_to_end),
        exported_by=exported_by,
        rollback=result.rollback_statement,
        declared=tuple(
            DeclaredSpending(d.plan_hash, next((p.name for p in plans if p.plan_hash == d.plan_hash), ""),
                             d.silo, d.round, d.epsilon_spent, d.epsilon_remaining, d.delta)
            for d in declared),
        declared_source=declared_source,
    )


def reason_of(detail: Mapping[str, Any]) -> str:
    """The refusal reason as logged: the stable code and the words, whichever are present
    (silos log only codes; their words may not leave the silo)."""
    code = str(detail.get("code") or "")
    words = str(detail.get("reason") or "")
    if code and words and words != code:
        return f"{code}: {words}"
    return code or words


def _plans(entries: list[AuditEntry]) -> tuple[PlanRow, ...]:
    rows: dict[str, PlanRow] = {}
    for entry in entries:
        if not entry.kind.startswith("plan."):
            continue
        detail = entry.detail
        plan_hash = str(detail.get("plan_hash") or entry.entities.get("plan") or "")
        if not plan_hash:
            continue
        known = rows.get(plan_hash)
        status = entry.kind.split(".", 1)[1]
        epsilon = detail.get("epsilon")
        cohort = detail.get("cohort")
        rows[plan_hash] = PlanRow(
            plan_hash=plan_hash,
            name=str(detail.get("name") or (known.name if known else "")) or "(name not logged)",
            purpose=str(detail.get("purpose") or (known.purpose if known else "")),
            status="pending" if status == "received" and known is None else (
                known.status if status == "received" and known else status),
            decided_by=entry.actor if status != "received" else (known.decided_by if known else ""),
            decided_at=entry.recorded if status != "received" else (known.decided_at if known else ""),
            expires_at=str(detail.get("expires_at") or "") if status == "approved" else (
                known.expires_at if known else ""),
            epsilon=(f"ε {epsilon:g}, δ {detail.get('delta'):g}" if isinstance(epsilon, (int, float))
                     and isinstance(detail.get("delta"), (int, float))
                     else "no DP" if "epsilon" in detail else (known.epsilon if known else "")),
            cohort=(", ".join(str(m.get("silo")) for m in cohort if isinstance(m, Mapping))
                    if isinstance(cohort, list) and cohort else (known.cohort if known else "")),
        )
    return tuple(rows.values())


def _datasets(entries: list[AuditEntry]) -> tuple[DatasetRow, ...]:
    rows: dict[str, DatasetRow] = {}
    for entry in entries:
        if entry.kind not in ("dataset.registered", "dataset.removed") or entry.outcome_name != "success":
            continue
        name = str(entry.entities.get("dataset") or "")
        detail = entry.detail
        rows[name] = DatasetRow(
            name=name,
            status="registered" if entry.kind == "dataset.registered" else "removed",
            by=entry.actor,
            at=entry.recorded,
            records=str(detail.get("records", "")),
            policy_sha256=str(detail.get("policy_sha256", "")),
            dropped=", ".join(map(str, detail.get("dropped") or [])) or ("—" if "dropped" in detail else ""),
            generalised=", ".join(map(str, detail.get("generalised") or [])) or (
                "—" if "generalised" in detail else ""),
        )
    return tuple(rows.values())


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
    """Charges up to the end of the period (spent is cumulative, so earlier charges count).
    A charge the ledger refused (over budget: recorded as dp.charge with a failure outcome) spent
    nothing and is not counted; it is listed in section 8 and, on the first page, among the
    security events and failures."""
    charges: dict[str, list[tuple[datetime, DpChargeDetail]]] = {}
    for entry in entries:
        if entry.kind != "dp.charge" or entry.recorded_at >= period.end or entry.outcome_name != "success":
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
                reasons=tuple(dict.fromkeys(
                    reason_of(e.detail) for e, _ in items if reason_of(e.detail))),
                first_recorded=items[0][0].recorded,
            )
        )
    return tuple(rows)


_RELEASES = {
    "SecAggReply": "Secure-aggregation message (masked model update, encrypted key shares or "
                   "unmasking shares) — no record-level data",
    "TrainResult": "Training result: clipped, noised model update and allow-listed training metrics",
    "EvaluateResult": "Evaluation result: allow-listed metrics (loss, accuracy, AUC) and example count",
    "masked_update": "Masked model update",
    "metrics": "Allow-listed aggregate metrics",
}


def _charges(entries: list[AuditEntry]) -> dict[tuple[str, int], list[DpChargeDetail]]:
    found: dict[tuple[str, int], list[DpChargeDetail]] = {}
    for entry in entries:
        if entry.kind == "dp.charge" and entry.outcome_name == "success":
            detail = _detail(DpChargeDetail, entry)
            if detail is not None:
                found.setdefault((detail.plan_hash, detail.round), []).append(detail)
    return found


def _privacy_words(kind: str, charges: list[DpChargeDetail]) -> str:
    if kind == "EvaluateResult":  # never inside a DP mechanism, whatever the round number says
        return ("No ε: evaluation metrics are released without differential privacy and counted "
                "against the plan's evaluation limit")
    if charges:
        return "; ".join(
            f"ε {c.epsilon:.3g} (δ {c.delta:.2g}) charged to {c.dataset} for this round; "
            f"{c.epsilon_spent_total:.3g} of {c.epsilon_budget:.3g} spent after it" for c in charges)
    if kind == "SecAggReply":
        return "No ε of its own: protocol message of a round whose update is charged where it was trained"
    return "No ε charge recorded in this log for this round"


def _disclosures(
    in_period: tuple[AuditEntry, ...], up_to_end: list[AuditEntry], plans: tuple[PlanRow, ...],
    default_purpose: str,
) -> list[Disclosure]:
    charges = _charges(up_to_end)
    purposes = {p.plan_hash: (f"{p.name}: {p.purpose}" if p.purpose else p.name) for p in plans
                if p.name != "(name not logged)" or p.purpose}
    out = []
    for entry in in_period:
        if entry.kind == "model.exported":
            plan = str(entry.detail.get("plan_hash") or "")
            out.append(Disclosure(
                index=entry.index, recorded=entry.recorded, recipient="coordinator (model file)",
                kind="model", bytes=0, sha256="", plan_hash=plan, round=-1,
                description=f"Final trained model exported to {entry.detail.get('path', '?')}",
                purpose=purposes.get(plan, default_purpose),
                privacy="Covered by the silos' per-round charges (the model is computed from the "
                        "released sums only)"))
            continue
        if entry.kind != "payload.released":
            continue
        detail = _detail(PayloadReleasedDetail, entry)
        if detail is None:
            continue
        words = _RELEASES.get(detail.kind, detail.kind)
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
                description=f"{words}, {detail.bytes:,} bytes (round {detail.round})",
                purpose=purposes.get(detail.plan_hash, default_purpose),
                privacy=_privacy_words(detail.kind, charges.get((detail.plan_hash, detail.round), [])),
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
