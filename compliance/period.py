"""The reporting period an officer asks for, as a half-open UTC interval.

Why half-open and UTC: `--from 2025-03-01 --to 2025-03-31` must include every event of
31 March and none of 1 April, whatever the officer's or the node's local time zone; entries
are recorded in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

from compliance.clock import format_timestamp
from compliance.errors import ReportError


@dataclass(frozen=True)
class Period:
    """[start, end) in UTC, plus the spellings the officer used."""

    start: datetime
    end: datetime
    label_from: str
    label_to: str

    def contains(self, moment: datetime) -> bool:
        """Whether `moment` falls inside the period."""
        return self.start <= moment < self.end

    @property
    def start_text(self) -> str:
        return format_timestamp(self.start)

    @property
    def end_text(self) -> str:
        return format_timestamp(self.end)


def parse_period(date_from: str, date_to: str) -> Period:
    """Dates (YYYY-MM-DD, whole days, `to` inclusive) or ISO 8601 datetimes with a zone
    (`to` exclusive). Raises `ReportError` naming the bad argument."""
    start = _parse(date_from, "--from", end_of_day=False)
    end = _parse(date_to, "--to", end_of_day=True)
    if end <= start:
        raise ReportError(f"--to {date_to} is not after --from {date_from}")
    return Period(start, end, date_from, date_to)


def _parse(text: str, name: str, *, end_of_day: bool) -> datetime:
    try:
        day = date.fromisoformat(text)
    except ValueError:
        day = None
    if day is not None and len(text) == 10:
        moment = datetime.combine(day, time(0), tzinfo=timezone.utc)
        return moment + timedelta(days=1) if end_of_day else moment
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ReportError(
            f"{name} {text!r} is neither a date (YYYY-MM-DD) nor an ISO 8601 datetime"
        ) from None
    if moment.tzinfo is None:
        raise ReportError(f"{name} {text!r} has no time zone; add Z or +hh:mm")
    return moment.astimezone(timezone.utc)
