"""Export an audit report for one node and period, and log that it was exported.

Order matters and is deliberate: (1) read the Art. 30 record first, so a missing or invalid
record fails before any work; (2) verify the log, so the report states the verification
result rather than assuming it; (3) write the report atomically (temp file + rename), so no
half-written report is ever left at the destination; (4) only then append `report.exported`
with the report's SHA-256 to the node's own log, so the log accounts for every report that
exists. A log that fails verification still gets its report (marked FAILED — the officer
needs it), but nothing is appended to a log that is no longer trustworthy.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Sequence

from healthfed_common.atomic_files import write_atomically

from compliance.audit_log import AuditLog
from compliance.clock import Clock, utc_now
from compliance.errors import ExportNotRecordable, ReportError
from compliance.node_check import check_log
from compliance.node_dir import NodePaths
from compliance.period import Period
from compliance.processing_record import load_processing_record
from compliance.report.data import ReportData, build_report_data
from compliance.verify import VerificationResult

Format = Literal["pdf", "html", "csv", "fhir"]
FORMATS: tuple[Format, ...] = ("pdf", "html", "csv", "fhir")


@dataclass(frozen=True)
class ExportOutcome:
    """What `export_report` did."""

    out: Path
    sha256: str
    verification: VerificationResult
    events: int
    logged_index: int | None
    """Index of the `report.exported` entry, or None when the log failed verification."""


def _renderer(fmt: Format) -> Callable[[ReportData], bytes]:
    """Import only the renderer asked for (reportlab and matplotlib are slow to import)."""
    if fmt == "pdf":
        from compliance.report.pdf import render_pdf

        return render_pdf
    if fmt == "html":
        from compliance.report.html import render_html

        return render_html
    if fmt == "csv":
        from compliance.report.csv_format import render_csv

        return render_csv
    if fmt == "fhir":
        from compliance.report.fhir import render_fhir

        return render_fhir
    raise ReportError(f"unknown report format {fmt!r}; choose one of {', '.join(FORMATS)}")


def export_report(
    node_dir: Path,
    period: Period,
    fmt: Format,
    out: Path,
    *,
    actor: str,
    public_key: Path | None = None,
    witness_db: Path | Sequence[Path] | None = None,
    clock: Clock | None = None,
) -> ExportOutcome:
    """Write the report of `node_dir` for `period` to `out` in format `fmt`."""
    clock = clock or utc_now
    render = _renderer(fmt)
    paths = NodePaths(Path(node_dir))
    paths.require_log()
    record = load_processing_record(paths.processing_record)
    check = check_log(paths.audit_db, paths, public_key, witness_db)
    raw, result = check.raw, check.result
    if raw.origin is None:
        raise ReportError(f"{paths.audit_db} has no origin recorded; is it an audit log?")
    if result.ok and not paths.signing_key.is_file():
        # checked before anything is written: opening the log to record would make a new key
        raise ExportNotRecordable(
            f"{paths.signing_key} is missing, so this export could not be recorded in the node's audit "
            "log (is this a copy of the node folder?); no report was written. Export on the node "
            "itself, or check a copy read-only with `compliance verify`")
    data = build_report_data(
        origin=raw.origin,
        node_dir=paths.root,
        result=result,
        key_source=check.key_source,
        record=record,
        period=period,
        generated_at=clock(),
        exported_by=actor,
    )
    content = render(data)
    _write_atomically(Path(out), content)
    digest = hashlib.sha256(content).hexdigest()
    logged_index = None
    if result.ok:
        with AuditLog.open(paths.audit_db, paths.signing_key, raw.origin, clock=clock) as log:
            logged_index = log.record(
                "report.exported",
                actor=actor,
                entities={"report": Path(out).name},
                detail={
                    "format": fmt,
                    "sha256": digest,
                    "period_from": period.start_text,
                    "period_to": period.end_text,
                    "log_size": result.entries,
                    "events": len(data.events),
                },
            )
    return ExportOutcome(Path(out), digest, result, len(data.events), logged_index)


def _write_atomically(out: Path, content: bytes) -> None:
    """All or nothing (healthfed_common.atomic_files), private to this account (0600, as the
    report quotes the log); a missing folder is a ReportError naming it."""
    directory = out.parent if str(out.parent) else Path(".")
    if not directory.is_dir():
        raise ReportError(f"cannot write {out}: directory {directory} does not exist")
    write_atomically(out, content, mode=0o600)
