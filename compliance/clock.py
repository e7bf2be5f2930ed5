"""UTC timestamps in one fixed text form, so they sort and compare as strings.

Why a module: audit entries and checkpoints are hashed and signed, so their timestamps must
have exactly one spelling (RFC 3339, UTC, microseconds, `Z`), and the clock is injectable so
a report over a chosen period can be tested on a real log without waiting for real time.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

Clock = Callable[[], datetime]
"""Returns the current time as an aware datetime."""

_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utc_now() -> datetime:
    """The system clock, in UTC."""
    return datetime.now(timezone.utc)


def format_timestamp(moment: datetime) -> str:
    """RFC 3339 UTC with microseconds, e.g. 2025-03-01T09:30:00.000000Z."""
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {moment!r} has no time zone; audit times must be aware")
    return moment.astimezone(timezone.utc).strftime(_FORMAT)


def parse_timestamp(text: str) -> datetime:
    """Inverse of `format_timestamp`; raises ValueError on any other spelling."""
    return datetime.strptime(text, _FORMAT).replace(tzinfo=timezone.utc)
