"""Reports in every format, from a real log: content, validity, and the export event."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from compliance_support import SteppingClock, write_processing_record
from compliance_tamper import entry, put, raw

from compliance.errors import ProcessingRecordInvalid, ProcessingRecordMissing, ReportError
from compliance.export import export_report
from compliance.log_store import read_raw_log
from compliance.node_dir import NodePaths
from compliance.period import parse_period
from compliance.report.data import SECTIONS

MARCH = parse_period("2025-03-01", "2025-03-31")
EXPORT_CLOCK_START = "2025-04-02"


def export(node: Path, fmt: str, out: Path, period=MARCH):  # type: ignore[no-untyped-def]
    from datetime import datetime, timezone

    clock = SteppingClock(datetime(2025, 4, 2, 9, 0, tzinfo=timezone.utc))
    return export_report(node, period, fmt, out, actor="officer:carol", clock=clock)  # type: ignore[arg-type]


@pytest.fixture()
def node_with_record(node: Path) -> Path:
    write_processing_record(node)
    return node


def test_pdf_is_a_real_pdf_with_every_section(node_with_record: Path, tmp_path: Path) -> None:
    from pypdf import PdfReader

    out = tmp_path / "report.pdf"
    outcome = export(node_with_record, "pdf", out)
    assert out.read_bytes().startswith(b"%PDF-")
    text = "\n".join(page.extract_text() for page in PdfReader(out).pages)
    flat = " ".join(text.split())
    for number, title in enumerate(SECTIONS, 1):
        assert f"{number}. {title}" in flat, title
    assert "VERIFIED" in flat
    assert "icu-2023" in flat and "ε" in flat  # privacy table, with real Greek letters
    assert "St Mary's Hospital NHS Trust" in flat  # Art. 30 record
    assert "Geneva" in flat  # transfers
    assert "masked_update, 40961 bytes" in flat  # a disclosure
    assert outcome.logged_index == 16


def test_html_is_self_contained_with_an_inline_chart(node_with_record: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    export(node_with_record, "html", out)
    html = out.read_text(encoding="utf-8")
    assert "<svg" in html and "id='privacy-chart'" in html
    for title in SECTIONS:
        assert title in html
    for external in ("<script", "src=\"http", "href=\"http", "@import", "url(http"):
        assert external not in html


def test_csv_has_one_row_per_event_in_the_period(node_with_record: Path, tmp_path: Path) -> None:
    out = tmp_path / "events.csv"
    outcome = export(node_with_record, "csv", out)
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert len(rows) == outcome.events == 16
    assert [int(r["index"]) for r in rows] == list(range(16))
    charge = next(r for r in rows if r["kind"] == "dp.charge")
    assert json.loads(charge["detail"])["epsilon"] == 0.75
    assert charge["type_code"] == "110112"


def test_fhir_bundle_validates_as_r4(node_with_record: Path, tmp_path: Path) -> None:
    from fhir.resources.R4B.auditevent import AuditEvent
    from fhir.resources.R4B.bundle import Bundle

    out = tmp_path / "bundle.json"
    export(node_with_record, "fhir", out)
    document = json.loads(out.read_text(encoding="utf-8"))
    bundle = Bundle.model_validate(document)
    assert bundle.type == "collection"
    assert len(bundle.entry) == 16
    events = [AuditEvent.model_validate(e["resource"]) for e in document["entry"]]
    assert all(e.action in {"C", "R", "U", "D", "E"} for e in events)
    assert {e.outcome for e in events} == {"0", "4", "8"}
    refused = next(e for e in events if e.subtype[-1].code == "connection.refused")
    assert refused.type.code == "110114" and refused.outcomeDesc == "certificate revoked"
    assert refused.agent[0].requestor is True
    assert refused.source.observer.identifier.value == "silo:st-marys"
    fulls = {e["fullUrl"] for e in document["entry"]}
    assert len(fulls) == 16


def test_period_selects_events(node_with_record: Path, tmp_path: Path) -> None:
    # Events are 6 h apart from 2025-03-01T08:00Z: 2025-03-02 holds entries 3..6.
    outcome = export(node_with_record, "csv", tmp_path / "day.csv",
                     parse_period("2025-03-02", "2025-03-02"))
    rows = list(csv.DictReader(io.StringIO((tmp_path / "day.csv").read_text())))
    assert [int(r["index"]) for r in rows] == [3, 4, 5, 6]
    assert outcome.events == 4


def test_export_is_recorded_in_the_node_log(node_with_record: Path, tmp_path: Path) -> None:
    import hashlib

    out = tmp_path / "report.csv"
    outcome = export(node_with_record, "csv", out)
    doc = entry(NodePaths(node_with_record).audit_db, outcome.logged_index)
    assert doc["kind"] == "report.exported"
    assert doc["detail"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert doc["agents"] == [{"requestor": True, "who": "officer:carol"}]
    assert doc["detail"]["period_to"] == "2025-04-01T00:00:00.000000Z"


def test_tampered_log_gets_a_failed_report_and_no_export_event(
    node_with_record: Path, tmp_path: Path
) -> None:
    db = NodePaths(node_with_record).audit_db
    doc = entry(db, 6)
    doc["detail"]["epsilon"] = 0.0
    with raw(db) as conn:
        put(conn, 6, doc)
    out = tmp_path / "report.html"
    outcome = export(node_with_record, "html", out)
    assert not outcome.verification.ok and outcome.logged_index is None
    html = out.read_text(encoding="utf-8")
    assert "FAILED at entry 6" in html
    assert len(read_raw_log(db).entries) == 16  # nothing appended to the untrusted log


def test_missing_processing_record(node: Path, tmp_path: Path) -> None:
    with pytest.raises(ProcessingRecordMissing, match="processing-record.yaml"):
        export(node, "html", tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        (lambda t: t + "lawful_basis: consent\n", "lawful_basis: Extra inputs are not permitted"),
        (lambda t: t.replace("retention: Audit records 6 years; model updates are not "
                             "retained by the silo\n", ""), "retention: Field required"),
        (lambda t: t.replace("data_categories: [vital signs, laboratory results, age band]",
                             "data_categories: []"), "data_categories"),
        (lambda t: t.replace("    safeguards: EU adequacy decision for Switzerland\n", ""),
         "transfers.0.safeguards: Field required"),
        (lambda t: "controller: [unclosed\n", "not valid YAML"),
        (lambda t: "- just\n- a list\n", "mapping"),
    ],
)
def test_invalid_processing_record(node: Path, tmp_path: Path, mutation, message) -> None:  # type: ignore[no-untyped-def]
    from compliance_support import PROCESSING_RECORD

    write_processing_record(node, mutation(PROCESSING_RECORD))
    with pytest.raises(ProcessingRecordInvalid) as caught:
        export(node, "html", tmp_path / "r.html")
    assert message in str(caught.value)
    assert "processing-record.yaml" in str(caught.value)


def test_bad_period_and_output(node_with_record: Path, tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="--to"):
        parse_period("2025-03-31", "2025-03-01")
    with pytest.raises(ReportError, match="--from"):
        parse_period("March", "2025-03-01")
    with pytest.raises(ReportError, match="does not exist"):
        export(node_with_record, "csv", tmp_path / "missing-dir" / "r.csv")


def _first_page(pdf: Path) -> str:
    from pypdf import PdfReader

    return " ".join(PdfReader(pdf).pages[0].extract_text().split())


def test_first_page_is_an_executive_summary_with_the_verdict(node: Path, tmp_path: Path) -> None:
    """A DPO reads page 1: the verdict in the title, then plans, datasets, ε, disclosures and
    refusals in plain words, the person who exported it and a sign-off block. Refusal reasons
    come from the codes the log holds (silos log a code, never words)."""
    from compliance_support import open_log

    plan = "ab" * 32
    with open_log(node, SteppingClock()) as log:
        log.record("plan.approved", actor="person:Dr. A. Jones", entities={"plan": plan},
                   detail={"plan_hash": plan, "name": "heart-lr", "purpose": "Cardiac risk research",
                           "cohort": [{"silo": "st-marys", "key_fingerprint": "ee" * 32}],
                           "epsilon": 3.0, "delta": 1e-5, "expires_at": "2025-04-01T00:00:00+00:00"})
        log.record("dataset.registered", actor="person:Ian T. Admin", entities={"dataset": "heart"},
                   detail={"records": 303, "policy_sha256": "cd" * 32, "dropped": ["ssn"], "generalised": ["zip"]})
        log.record("round.refused", actor="silo:st-marys", outcome="minor_failure",
                   detail={"plan_hash": plan, "round": 9, "code": "BUDGET_EXHAUSTED"})
    write_processing_record(node)
    out = tmp_path / "report.pdf"
    export(node, "pdf", out)
    page = _first_page(out)
    assert page.index("VERIFIED — HealthFed audit report — silo:st-marys") < page.index("1. Executive summary")
    assert "2. Scope and period" not in page or page.index("Sign-off") < page.index("2. Scope and period")
    for expected in ("heart-lr (approved by person:Dr. A. Jones, ε 3, δ 1e-05)",
                     "heart (registered by person:Ian T. Admin)",
                     "icu-2023: ε 2.25 spent of 8, 5.75 remaining",
                     "3 payloads", "BUDGET_EXHAUSTED ×1", "Report exported by officer:carol", "Sign-off"):
        assert expected in page, expected
    whole = " ".join(" ".join(p.extract_text() for p in __import__("pypdf").PdfReader(out).pages).split())
    assert "Merkle" in whole and "Dropped" in whole and "ssn" in whole
    assert "{'" not in whole and "{\"" not in whole  # no Python dict or JSON text for people


def test_a_failed_log_says_failed_in_the_title(node: Path, tmp_path: Path) -> None:
    db = NodePaths(node).audit_db
    doc = entry(db, 7)
    doc["detail"]["epsilon"] = 0.01
    with raw(db) as conn:
        put(conn, 7, doc)
    write_processing_record(node)
    out = tmp_path / "report.pdf"
    export(node, "pdf", out)
    page = _first_page(out)
    assert page.startswith("FAILED — HealthFed audit report") or "FAILED — HealthFed audit report — silo:st-marys" in page
    assert "does not verify from entry 7" in page
    html = tmp_path / "report.html"
    export(node, "html", html)
    assert "<title>FAILED — HealthFed audit report" in html.read_text(encoding="utf-8")
