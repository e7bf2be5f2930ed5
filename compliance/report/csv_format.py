"""CSV: one row per event in the period, for spreadsheets and SIEM import.

Why JSON in the `entities` and `detail` columns: they are open-ended; canonical JSON keeps
each cell unambiguous and machine-readable.

Why some cells start with an apostrophe: a spreadsheet runs a cell that starts with = + - @, a
tab or a carriage return as a formula (CSV injection), and text in a log can come from the
coordinator (the aggregator's whole log is its own). Such a cell is written with a leading `'`,
which spreadsheets show as text; a SIEM import sees the apostrophe.
"""

from __future__ import annotations

import csv
import io

from compliance.report.data import ReportData
from healthfed_common.canonical_json import canonical_json

COLUMNS = (
    "index", "recorded", "kind", "type_code", "type_display", "action", "outcome",
    "outcome_code", "actor", "requestor", "source", "entities", "detail",
)


def render_csv(data: ReportData) -> bytes:
    """UTF-8 CSV with a header row."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for entry in data.events:
        requestor = next((a for a in entry.agents if a.get("requestor")), None)
        writer.writerow([entry.index] + [_as_text(str(cell)) for cell in (
            entry.recorded, entry.kind, entry.type.get("code", ""),
            entry.type.get("display", ""), entry.action, entry.outcome_name, entry.outcome,
            entry.actor, "true" if requestor is not None else "false", entry.source,
            canonical_json(dict(entry.entities)).decode("utf-8"),
            canonical_json(dict(entry.detail)).decode("utf-8"),
        )])
    return buffer.getvalue().encode("utf-8")


_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _as_text(cell: str) -> str:
    """The cell, with a leading apostrophe where a spreadsheet would run it as a formula."""
    return "'" + cell if cell.startswith(_FORMULA_STARTS) else cell
