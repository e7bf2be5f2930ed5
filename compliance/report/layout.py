"""The report as sections of simple blocks (paragraphs, key/value lists, tables, the chart).

Why an intermediate layout: the PDF and HTML reports must show the same words and numbers;
building the text once here leaves each renderer only typography.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from collections import Counter

from compliance.events import EVENT_KINDS
from compliance.report.data import SECTIONS, ReportData, reason_of
from compliance.signing import fingerprint


@dataclass(frozen=True)
class Paragraph:
    text: str
    emphasis: bool = False


@dataclass(frozen=True)
class KeyValues:
    rows: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Table:
    caption: str
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    empty: str = "None in this period."
    widths: tuple[float, ...] = ()
    """Relative column widths (equal when empty); renderers scale them to the page."""
    tall: bool = False
    """Rows with room to write in by hand (the sign-off block)."""


@dataclass(frozen=True)
class HashList:
    label: str
    hashes: tuple[str, ...]


@dataclass(frozen=True)
class Chart:
    """Placeholder for the privacy chart; each renderer embeds it in its own way."""

    caption: str


Block = Union[Paragraph, KeyValues, Table, HashList, Chart]


@dataclass(frozen=True)
class Section:
    title: str
    blocks: tuple[Block, ...] = field(default_factory=tuple)


def short(value: str, length: int = 16) -> str:
    """A long hex value cut for tables (full values appear in the integrity section/CSV)."""
    return value if len(value) <= length else value[:length] + "…"


def when(recorded: str) -> str:
    """An RFC 3339 UTC timestamp as people read it in a table: `2025-03-05 08:00:00`."""
    return recorded[:19].replace("T", " ") if len(recorded) >= 19 and recorded[10] == "T" else recorded


def title_block(data: ReportData) -> tuple[str, str]:
    """Report title and subtitle."""
    return (
        f"{data.verdict} — HealthFed audit report — {data.origin}",
        f"Period {data.period.label_from} to {data.period.label_to} · generated "
        f"{data.generated_at}",
    )


def build_sections(data: ReportData) -> list[Section]:
    """All sections, in the order of `SECTIONS`."""
    sections = [
        _summary(data), _scope(data), _hipaa(data), _privacy(data), _plans(data), _datasets(data),
        _rounds(data), _flagged(data), _events(data), _gdpr(data), _dpia(data), _integrity(data),
    ]
    assert tuple(s.title for s in sections) == SECTIONS
    return sections


def _summary(data: ReportData) -> Section:
    """What a DPO reads first: the verdict, then one line per thing they sign for."""
    integrity = data.integrity
    if integrity.verified:
        verdict = (f"VERIFIED: the audit log of {data.origin} is intact — every entry is covered "
                   f"by a signed checkpoint and the Merkle tree recomputes to its signed roots.")
    else:
        verdict = (f"FAILED: the audit log of {data.origin} does not verify from entry "
                   f"{integrity.first_bad_index}; the figures below are computed from the log as "
                   "stored and are not evidence.")
    plans = "; ".join(
        f"{p.name} ({p.status}{f' by {p.decided_by}' if p.decided_by else ''}"
        f"{f', {p.epsilon}' if p.epsilon else ''})" for p in data.plans) or "None"
    datasets = "; ".join(f"{d.name} ({d.status} by {d.by})" for d in data.datasets) or "None"
    privacy = "; ".join(
        f"{p.dataset}: ε {p.epsilon_spent:.3g} spent of {p.epsilon_budget:.3g}, "
        f"{p.epsilon_remaining:.3g} remaining" + (" — EXCEEDED" if p.epsilon_remaining < 0 else "")
        for p in data.privacy) or _declared_summary(data) or (
        "No privacy budget was charged up to the end of the period")
    recipients = sorted({d.recipient for d in data.disclosures})
    kinds = Counter(d.description.split(":")[0].split(" (")[0].split(",")[0] for d in data.disclosures)
    count, size = len(data.disclosures), sum(d.bytes for d in data.disclosures)
    disclosures = (f"{count} payload{'s' if count != 1 else ''}{f' ({size:,} bytes)' if size else ''} to "
                   f"{', '.join(recipients)}: " + ", ".join(f"{n} × {k.lower()}" for k, n in kinds.most_common())
                   + "; each with its purpose and ε in section 3" if data.disclosures else "None")
    codes = Counter(reason_of(item.entry.detail).split(":", 1)[0] or item.entry.kind for item in data.refusals)
    refusals = (f"{len(data.refusals)}: " + ", ".join(f"{code} ×{n}" for code, n in codes.most_common())
                if data.refusals else "None")
    # the rest of section 8 (security events, failures), so a serious failure such as a refused
    # aggregator checkpoint is on the first page and not only among the refusals' detail
    others = [item for item in data.flagged if "refusal" not in item.why]
    other_kinds = Counter(
        item.entry.kind + ("" if item.entry.outcome_name == "success" else f" ({item.entry.outcome_name.replace('_', ' ')})")
        for item in others)
    security = (f"{len(others)}: " + ", ".join(f"{kind} ×{n}" for kind, n in other_kinds.most_common())
                + "; each in section 8" if others else "None")
    rows: list[tuple[str, str]] = [
        ("Verdict", data.verdict),
        ("Node", data.origin),
        ("Period", f"{data.period.label_from} to {data.period.label_to} (UTC)"),
        ("Events in period", f"{len(data.events)} of {data.log_size} in the log"),
        ("Rollback check", data.rollback or "—"),
        ("Plans", plans),
        ("Datasets", datasets),
        ("Privacy budget (ε) per dataset", privacy),
        ("Disclosures in period", disclosures),
        ("Refusals in period", refusals),
        ("Security events and failures in period", security),
    ]
    if data.exported_by:
        rows.append(("Report exported by", f"{data.exported_by}, {data.generated_at}; " + (
            "this export is recorded in the node's audit log as a report.exported event with this "
            "file's SHA-256" if data.integrity.verified else
            "this export is NOT recorded in the node's audit log: nothing is appended to a log that "
            "failed verification")))
    return Section(SECTIONS[0], (
        Paragraph(verdict, emphasis=True),
        KeyValues(tuple(rows)),
        Paragraph("Sections 2–10 give the evidence in plain words. Section 11 is the data "
                  "protection impact assessment (threat model, privacy statement, residual risks) "
                  "with the full sign-off block; the Merkle proofs and signatures that let an "
                  "auditor re-check this log are in the appendix (section 12)."),
        Paragraph("Sign-off:  name ____________________  role ____________________  "
                  "date ____________  signature ____________________"),
    ))


def _declared_summary(data: ReportData) -> str:
    if not data.declared:
        return ""
    return "Declared by the silos (the aggregator keeps no ledger): " + "; ".join(
        f"{d.silo}: ε {_g(d.epsilon_spent)} spent, {_g(d.epsilon_remaining)} remaining "
        f"({d.plan_name or short(d.plan_hash, 12)}, after round {d.round})" for d in data.declared)


def _g(value: float | None) -> str:
    return "?" if value is None else f"{value:.3g}"


def _plans(data: ReportData) -> Section:
    rows = tuple(
        (p.name, short(p.plan_hash, 12), p.purpose or "—", p.status, p.decided_by or "—",
         when(p.decided_at) or "—", when(p.expires_at) or "—", p.epsilon or "—", p.cohort or "—")
        for p in data.plans
    )
    return Section(SECTIONS[4], (
        Paragraph("Every plan this node received (a hospital) or started (the aggregator), with the "
                  "last decision or action taken on it up to the end of the period: who took it (a "
                  "person, or the node by its local policy), the "
                  "ε/δ it was allowed to spend, the approval's expiry and the cohort it may run with."),
        Table("Plans", ("Plan", "Hash", "Purpose", "Status", "By", "When (UTC)", "Expires",
                        "Privacy", "Cohort"), rows, empty="No plan events up to the end of the period."),
    ))


def _datasets(data: ReportData) -> Section:
    rows = tuple(
        (d.name, d.status, d.by, when(d.at), d.records or "—", short(d.policy_sha256) or "—",
         d.dropped or "—", d.generalised or "—")
        for d in data.datasets
    )
    return Section(SECTIONS[5], (
        Paragraph("Datasets registered for federated use and how they were de-identified: the "
                  "person who registered or removed them, the SHA-256 of the dataset policy that "
                  "governed de-identification, and the columns dropped or generalised."),
        Table("Datasets", ("Dataset", "Status", "By", "When (UTC)", "Records", "Policy SHA-256",
                           "Dropped", "Generalised"), rows,
              empty="No dataset events up to the end of the period."),
    ))


def _scope(data: ReportData) -> Section:
    return Section(SECTIONS[1], (
        KeyValues((
            ("Node (origin)", data.origin),
            ("Node state directory", data.node_dir),
            ("Audit log file", data.db_path),
            ("Period requested", f"{data.period.label_from} to {data.period.label_to}"),
            ("Period covered (UTC)", f"{data.period.start_text} ≤ recorded < {data.period.end_text}"),
            ("Events in period", str(len(data.events))),
            ("Entries in the whole log", str(data.log_size)),
            ("Report generated (UTC)", data.generated_at),
        )),
        Paragraph(
            "This report is computed from the node's tamper-evident audit log: an RFC 9162 "
            "Merkle tree over canonical-JSON entries with an Ed25519-signed checkpoint after "
            "every entry. Entries carry the fields of a FHIR R4 AuditEvent."
        ),
    ))


def _integrity(data: ReportData) -> Section:
    integrity = data.integrity
    blocks: list[Block] = [
        Paragraph(f"Verification result: {integrity.summary}", emphasis=True),
    ]
    if integrity.first_bad_index is not None:
        blocks.append(Paragraph(
            f"Entries from index {integrity.first_bad_index} on cannot be trusted; the "
            "figures below are computed from the log as stored and are not evidence."
        ))
    rows: list[tuple[str, str]] = [
        ("Trusted key (SHA-256 of Ed25519 public key)", integrity.key_fingerprint),
        ("Trusted key taken from", integrity.key_source),
    ]
    latest = integrity.latest
    if latest is not None:
        rows += [
            ("Latest checkpoint: origin", latest.origin),
            ("Latest checkpoint: tree size", str(latest.size)),
            ("Latest checkpoint: root hash", latest.root_hash),
            ("Latest checkpoint: signed at", latest.timestamp),
            ("Latest checkpoint: Ed25519 signature", latest.signature.hex()),
            ("Latest checkpoint: public key", latest.public_key.hex()),
            ("Latest checkpoint: key fingerprint", fingerprint(latest.public_key)),
        ]
    else:
        rows.append(("Latest checkpoint", "none verified"))
    blocks.append(KeyValues(tuple(rows)))
    blocks.append(Paragraph(
        "Signed message = 'healthfed/audit-checkpoint/v1\\n' + canonical JSON of {origin, "
        "size, root_hash, timestamp}. Proofs follow RFC 9162 §2.1.3–2.1.4 (leaf = "
        "SHA-256(0x00‖entry), node = SHA-256(0x01‖left‖right)); each was verified when this "
        "report was generated."
    ))
    for proof in integrity.proofs:
        blocks.append(HashList(
            f"{proof.label} — {'verified' if proof.verified else 'NOT verified'}"
            + ("" if proof.hashes else " (empty proof)"),
            proof.hashes,
        ))
    return Section(SECTIONS[11], tuple(blocks))


def _events(data: ReportData) -> Section:
    def display(kind: str) -> str:
        definition = EVENT_KINDS.get(kind)
        return f"{definition.type.code} {definition.type.display}" if definition else "?"

    return Section(SECTIONS[8], (
        Table("By type", ("Event kind", "FHIR AuditEvent.type", "Count"),
              tuple((kind, display(kind), str(n)) for kind, n in data.by_kind)),
        Table("By outcome", ("Outcome", "Count"),
              tuple((o.replace("_", " "), str(n)) for o, n in data.by_outcome)),
        Table("By actor (requesting agent)", ("Actor", "Count"),
              tuple((a, str(n)) for a, n in data.by_actor)),
    ))


def _flagged(data: ReportData) -> Section:
    rows = tuple(
        (str(item.entry.index), when(item.entry.recorded), item.entry.kind,
         item.entry.outcome_name.replace("_", " "), item.entry.actor, item.why,
         reason_of(item.entry.detail) or "—")
        for item in data.flagged
    )
    return Section(SECTIONS[7], (
        Paragraph("Refusals (connections, plans, rounds, revoked certificates), security "
                  "events, and every event whose outcome was not success."),
        Table("Refusals and security events", ("Entry", "Recorded (UTC)", "Kind", "Outcome",
              "Actor", "Listed because", "Reason"), rows),
    ))


def _privacy(data: ReportData) -> Section:
    rows = tuple(
        (p.dataset, f"{p.epsilon_spent:.4g}", f"{p.epsilon_budget:.4g}",
         f"{p.epsilon_remaining:.4g}" + (" EXCEEDED" if p.epsilon_remaining < 0 else ""),
         f"{p.delta_budget:.3g}", f"{p.largest_delta:.3g}", str(p.charges_in_period))
        for p in data.privacy
    )
    aggregator = data.origin.startswith("aggregator")
    blocks: list[Block] = []
    if rows or not aggregator:
        blocks += [
            Paragraph("Differential-privacy budget per dataset as of the end of the period, from "
                      "the dp.charge events the node records before anything is released "
                      "(ε spent is the privacy ledger's cumulative total)."),
            Table("Privacy spent and remaining", ("Dataset", "ε spent", "ε budget", "ε remaining",
                  "δ budget", "largest δ per charge", "charges in period"), rows,
                  empty="No dp.charge events up to the end of the period."),
        ]
    else:
        blocks.append(Paragraph("The aggregator keeps no privacy ledger: each hospital charges its "
                                "own before anything leaves it, and declares what it has spent "
                                "with every DP round's result."))
    if aggregator or data.declared:
        blocks.append(Paragraph(data.declared_source or "No declarations."))
        blocks.append(Table(
            "Spending declared by the silos", ("Plan", "Silo", "After round", "ε spent",
                                               "ε remaining", "δ"),
            tuple((d.plan_name or short(d.plan_hash, 12), d.silo, str(d.round), _g(d.epsilon_spent),
                   _g(d.epsilon_remaining), _g(d.delta)) for d in data.declared),
            empty="No silo declared any spending (plans without DP declare nothing)."))
    if data.privacy:
        blocks.append(Chart("Cumulative ε spent per dataset over time; dashed lines are the budgets."))
    return Section(SECTIONS[3], tuple(blocks))


def _rounds(data: ReportData) -> Section:
    names = {p.plan_hash: p.name for p in data.plans if p.name != "(name not logged)"}
    rows = tuple(
        (names.get(r.plan_hash) or short(r.plan_hash, 12), str(r.round), r.status, ", ".join(r.participants) or "—",
         "; ".join(r.reasons) or "—", when(r.first_recorded))
        for r in data.rounds
    )
    return Section(SECTIONS[6], (
        Table("Training rounds", ("Plan", "Round", "Status", "Participants", "Reasons",
              "First event (UTC)"), rows, widths=(1.4, 0.6, 0.9, 1.8, 1.8, 1.2)),
    ))


def _gdpr(data: ReportData) -> Section:
    record = data.processing_record
    controller = record.controller
    transfers = "; ".join(f"{t.destination} (safeguards: {t.safeguards})"
                          for t in record.transfers) or "None"
    return Section(SECTIONS[9], (
        Paragraph("Record of processing activities under GDPR Art. 30(1), as declared in "
                  "the node's processing-record.yaml."),
        KeyValues((
            ("Controller (Art. 30(1)(a))", f"{controller.name} — {controller.contact}"),
            ("Representative", controller.representative or "—"),
            ("Data protection officer", controller.dpo_contact or "—"),
            ("Purpose of processing (b)", record.purpose),
            ("Categories of data subjects (c)", "; ".join(record.data_subject_categories)),
            ("Categories of personal data (c)", "; ".join(record.data_categories)),
            ("Recipients (d)", "; ".join(record.recipients) or "None"),
            ("Transfers to third countries (e)", transfers),
            ("Retention (f)", record.retention),
            ("Security measures (g)", "; ".join(record.security_measures)),
        )),
    ))


def _hipaa(data: ReportData) -> Section:
    rows = tuple(
        (when(d.recorded), d.recipient, d.description, d.purpose or "—",
         d.privacy, str(d.index))
        for d in data.disclosures
    )
    total = sum(d.bytes for d in data.disclosures)
    return Section(SECTIONS[2], (
        Paragraph("Accounting of disclosures in the form of 45 CFR §164.528(b)(2): for every "
                  "release that left this node in the period, the date, the recipient, a brief "
                  "description of what was released and the purpose — and the privacy it cost. "
                  "Raw records never leave a hospital: what leaves is a model update clipped and "
                  "noised under differential privacy (masked under secure aggregation, so the "
                  "recipient only learns the sum over the cohort) or allow-listed aggregate "
                  "metrics. ε is charged once per round to the hospital's privacy ledger before "
                  "anything leaves; every message of that round is covered by that one charge."),
        KeyValues((
            ("Purpose of disclosures", data.processing_record.purpose),
            ("Disclosures in period", str(len(data.disclosures))),
            ("Bytes disclosed in period", f"{total:,}"),
        )),
        Table("Disclosures", ("Date (UTC)", "Recipient", "What was disclosed", "Purpose",
              "Privacy cost", "Entry"), rows, widths=(1.2, 1.1, 2.6, 1.8, 2.6, 0.75)),
    ))


_THREATS = (
    ("Sum only: the coordinator learns an honest hospital's update only inside a sum over at "
     "least t cohort hospitals", "A malicious coordinator with up to 2t − n − 1 colluding hospitals"),
    ("Once: an update enters at most one secure-aggregation session; out-of-range rounds and "
     "attempts are refused before any data or budget is touched", "A malicious coordinator re-offering rounds"),
    ("Nobody speaks for a hospital: its protocol messages are signed with the key it generated, "
     "pinned in the cohort its data steward approved", "A malicious coordinator that also runs the CA"),
    ("Everybody sees the same round (plan, model, cohort, survivors) or nothing is unmasked",
     "A malicious coordinator with colluders, as above"),
    ("ε is what was released: every release that depends on the records is charged before it "
     "leaves, or declared public in the privacy statement", "Retries, crashes, budget rewrites"),
    ("Tamper-evident audit: an edit, deletion or reordering of this log is detected; a rollback "
     "or a re-signed rewrite is detected within what a witness holds (the aggregator for a "
     "hospital's log, the hospitals for the coordinator's)", "Anyone with write access to the node's "
     "files, the coordinator included, for the witnessed part"),
)

_RESIDUAL = (
    ("A cohort of fakes", "The coordinator writes the cohort; keys it holds could pose as hospitals",
     "Data steward compares cohort fingerprints (silo-node plans show) with the other hospitals out of band"),
    ("Colluders in the sum", "Colluding hospitals know their own inputs; with c ≥ t − 1 the honest "
     "remainder can be one update", "Choose the threshold t with the number of distrusted hospitals in mind"),
    ("Poisoning", "A malicious hospital can bias the model within the quantised range",
     "Model validation before use; robust aggregation is not provided"),
    ("Metadata", "Who takes part, when, message and dataset sizes and the allow-listed metrics are "
     "visible to the coordinator", "Declared public in the privacy statement"),
    ("Non-private evaluation", "Evaluation metrics are exact (no DP) on held-out records",
     "Per-plan evaluation limit, each evaluation recorded as a disclosure"),
    ("Record-level, not patient-level ε", "A patient with k records is protected at about k·ε",
     "Budget per dataset set by the data steward with this in mind"),
    ("Hyper-parameter tuning", "Settings may have been chosen by looking at the same records",
     "Not charged to ε; tune on public or separate data where possible"),
    ("The coordinator's log outside what hospitals witnessed", "Hospitals pin the aggregator's audit "
     "key on the first checkpoint they accept and witness up to their last exchange; what came "
     "before or after, or was shown to one hospital only, is not caught (the verdict names the "
     "unwitnessed entries)", "Verify the aggregator's log against every hospital's witness store "
     "(compliance verify --witness, repeated)"),
)


def _dpia(data: ReportData) -> Section:
    """GDPR Art. 35(7): description, necessity, risks and measures — from the log and the
    threat model (docs/threat-model.md) — and the sign-off block."""
    record = data.processing_record
    plans = "; ".join(f"{p.name} ({p.purpose or 'purpose not logged'})" for p in data.plans) or (
        "No plan events up to the end of the period")
    statements: list[tuple[str, str]] = []
    for p in data.plans:
        if p.epsilon.startswith("ε"):
            statements.append((p.name,
                f"Record-level differential privacy, {p.epsilon} per hospital dataset. "
                "Unit of privacy: one record; neighbouring datasets differ by replacing one record "
                "(the dataset size is public). Each round is charged to the hospital's privacy "
                "ledger before anything leaves, and a round that would exceed the budget is refused."))
        elif p.epsilon == "no DP":
            statements.append((p.name, "No differential privacy — ε is infinite; the hospital's "
                               "policy had to allow a non-private plan, and it was charged as such."))
    evaluations = sum(1 for d in data.disclosures if d.kind == "EvaluateResult")
    residual = list(_RESIDUAL)
    if evaluations:
        residual.append(("Evaluations in this period", f"{evaluations} non-private evaluation "
                         "release(s) in section 3", "Reviewed by the DPO"))
    exceeded = [p.dataset for p in data.privacy if p.epsilon_remaining < 0]
    if exceeded:
        residual.append(("Budget exceeded", "ε spent exceeds the budget for " + ", ".join(exceeded),
                         "Investigate before any further plan runs"))
    signers = ("Data protection officer", "Data steward", f"Controller ({record.controller.name})")
    return Section(SECTIONS[10], (
        Paragraph("Data protection impact assessment of the federated training recorded in this "
                  "log, following GDPR Art. 35(7): (a) the processing, (b) its necessity and "
                  "proportionality, (c) the risks to data subjects and (d) the measures. Drawn from "
                  "the log, the record of processing (section 10) and HealthFed's threat model "
                  "(docs/threat-model.md); the signatories below confirm or amend it."),
        KeyValues((
            ("(a) Processing", f"{record.purpose}. Plans: {plans}"),
            ("Data subjects and data", f"{'; '.join(record.data_subject_categories)} — "
                                       f"{'; '.join(record.data_categories)}"),
            ("(b) Necessity and proportionality",
             "Patient records stay in the hospital; only model updates (clipped, noised, masked) and "
             "allow-listed metrics leave, and only for plans a data steward approved; datasets are "
             "de-identified and reduced to the plan's features (section 6)."),
            ("(d) Measures", "; ".join(record.security_measures)),
        )),
        Table("Threat model summary: what holds, against whom", ("Guarantee", "Holds against"),
              _THREATS, widths=(3, 1.6)),
        KeyValues(tuple(
            [(f"Privacy statement: {name}", text) for name, text in statements] or
            [("Privacy statement", "No plan with differential-privacy parameters was logged up to "
                                   "the end of the period.")]) + (
            ("Not covered by ε", "Hyper-parameter tuning on the same records, group privacy "
             "(several records of one patient), the train/test split of exports without a split "
             "column, non-private evaluations, and metadata (dataset sizes, schema, which plans "
             "ran when). `silo-node plans show` prints each plan's full statement."),)),
        Table("Residual risks", ("Risk", "Why it remains", "Mitigation / who acts"),
              tuple(residual), widths=(1.2, 2.2, 2.2)),
        Table("Sign-off", ("Role", "Name", "Decision", "Date", "Signature"),
              tuple((role, "", "☐ risks accepted   ☐ measures required", "", "") for role in signers),
              widths=(1.6, 1.6, 2.2, 0.9, 1.6), tall=True),
    ))
