"""CSV: one row per event in the period, for spreadsheets and SIEM import.

Why JSON in the `entities` and `detail` columns: they are open-ended; canonical JSON keeps
each cell unambiguous and machine-readable.
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
        writer.writerow([
            entry.index, entry.recorded, entry.kind, entry.type.get("code", ""),
            entry.type.get("display", ""), entry.action, entry.outcome_name, entry.outcome,
            entry.actor, "true" if requestor is not None else "false", entry.source,
            canonical_json(dict(entry.entities)).decode("utf-8"),
            canonical_json(dict(entry.detail)).decode("utf-8"),
        ])
    return buffer.getvalue().encode("utf-8")
