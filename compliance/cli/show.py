"""`compliance show`: list a node's audit events (read-only; does not verify)."""

from __future__ import annotations

import argparse
import json

from compliance.cli.common import EXIT_CODES_HELP, EXIT_OK, add_log_arguments, locate_log
from compliance.entry import AuditEntry
from compliance.errors import InvalidEvent
from compliance.events import EVENT_KINDS
from compliance.log_store import read_raw_log
from compliance.period import parse_period

DESCRIPTION = """\
List the events in a node's audit log, oldest first, optionally filtered by period and kind.
This only reads the log; run `compliance verify` to know whether it can be trusted.
"""

EXAMPLES = """\
examples:
  compliance show --node /var/lib/healthfed/silo --from 2025-03-01 --to 2025-03-31
  compliance show --node /var/lib/healthfed/silo --kind dp.charge --kind payload.released
  compliance show --node /var/lib/healthfed/silo --last 20 --json
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "show", help="list audit events", description=DESCRIPTION,
        epilog=EXAMPLES + "\n" + EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_log_arguments(parser)
    parser.add_argument("--from", dest="date_from", default="1970-01-01", metavar="DATE",
                        help="first day (YYYY-MM-DD, UTC) or ISO datetime (default: the start)")
    parser.add_argument("--to", dest="date_to", default="9999-12-30", metavar="DATE",
                        help="last day, inclusive (YYYY-MM-DD, UTC) or ISO datetime, "
                             "exclusive (default: no end)")
    parser.add_argument("--kind", action="append", choices=sorted(EVENT_KINDS), metavar="KIND",
                        help="only this kind (repeatable): " + ", ".join(sorted(EVENT_KINDS)))
    parser.add_argument("--last", type=int, metavar="N", help="only the last N matching events")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.set_defaults(run=run, parser=parser)


def run(args: argparse.Namespace) -> int:
    location = locate_log(args, args.parser)
    period = parse_period(args.date_from, args.date_to)
    kinds = set(args.kind or EVENT_KINDS)
    rows: list[tuple[int, AuditEntry | None, bytes]] = []
    for index, data in read_raw_log(location.db).entries:
        try:
            entry: AuditEntry | None = AuditEntry.from_bytes(data, f"entry {index}")
        except InvalidEvent:
            entry = None
        if entry is None or (entry.kind in kinds and period.contains(entry.recorded_at)):
            rows.append((index, entry, data))
    if args.last is not None:
        rows = rows[-args.last:] if args.last > 0 else []
    for index, entry, data in rows:
        if args.json:
            print(data.decode("utf-8", errors="replace"))
        elif entry is None:
            print(f"{index:>6}  <unreadable entry — run `compliance verify`>")
        else:
            extra = ", ".join(f"{k}={v}" for k, v in entry.entities.items())
            print(f"{index:>6}  {entry.recorded}  {entry.kind:<22} {entry.outcome_name:<15} "
                  f"{entry.actor}{'  ' + extra if extra else ''}")
    return EXIT_OK
