"""`compliance export`: write the audit report of a node for a period."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from compliance.cli.common import (
    EXIT_CODES_HELP,
    EXIT_INTEGRITY,
    EXIT_OK,
    EXIT_USAGE,
    add_log_arguments,
    add_person_arguments,
    locate_log,
    person_or_refuse,
)
from compliance.export import FORMATS, export_report
from compliance.period import parse_period

DESCRIPTION = """\
Write the audit report of one node for a period: scope and period; integrity evidence
(verification result, latest signed checkpoint, Merkle proofs); events by type, outcome and
actor; refusals and security events; privacy budget spent and remaining per dataset with a
chart; training rounds and participants; the GDPR Art. 30 record of processing (from
DIR/processing-record.yaml); and a HIPAA accounting of disclosures (what left the node,
when, to whom).

Formats: pdf and html (for people), csv (one row per event), fhir (a FHIR R4 Bundle of
AuditEvent resources). The log is verified first; a log that fails verification still gets
its report, marked FAILED, and the command exits with code 1. Every successful export is
itself recorded in the node's audit log (report.exported, with the report's SHA-256 and the
person from --by or $HEALTHFED_OPERATOR, which is required), so you need write access to the
node directory and its audit signing key: a copy of the folder without audit/signing.key gets
no report (EXPORT_NOT_RECORDABLE; check such a copy with `compliance verify`). A FAILED report
says that its export was not recorded. A damaged or truncated log file cannot be reported on:
exit code 1.

DIR/processing-record.yaml must contain exactly these keys:
  controller: {name, contact, representative (optional), dpo_contact (optional)}
  purpose, retention: text
  data_subject_categories, data_categories, recipients, security_measures: lists of text
  transfers: list of {destination, safeguards} (empty list if none)
"""

EXAMPLES = """\
examples:
  compliance export --node /var/lib/healthfed/silo --from 2025-01-01 --to 2025-03-31 \\
      --format pdf --out st-marys-2025Q1.pdf
  compliance export --node /var/lib/healthfed/silo --from 2025-03-01 --to 2025-03-31 \\
      --format fhir --out audit-events.json --public-key st-marys.pub
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "export", help="write an audit report (pdf, html, csv or fhir)",
        description=DESCRIPTION, epilog=EXAMPLES + "\n" + EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_log_arguments(parser)
    parser.add_argument("--from", dest="date_from", required=True, metavar="DATE",
                        help="first day of the period (YYYY-MM-DD, UTC) or ISO datetime")
    parser.add_argument("--to", dest="date_to", required=True, metavar="DATE",
                        help="last day of the period, inclusive (YYYY-MM-DD, UTC), or ISO "
                             "datetime, exclusive")
    parser.add_argument("--format", required=True, choices=FORMATS, help="report format")
    parser.add_argument("--out", required=True, type=Path, metavar="FILE",
                        help="where to write the report (replaced atomically if it exists)")
    parser.add_argument("--witness", type=Path, metavar="FILE", action="append",
                        help="also check the log against this witness database; repeat it for "
                             "several (default: found automatically as for `compliance verify`)")
    add_person_arguments(parser, "the person exporting")
    parser.set_defaults(run=run, parser=parser)


def run(args: argparse.Namespace) -> int:
    node = locate_log(args, args.parser).node
    if node is None:
        args.parser.error("export needs --node DIR (it reads the record of processing and "
                          "records the export in the node's log)")
        return EXIT_USAGE
    actor = person_or_refuse(args)
    period = parse_period(args.date_from, args.date_to)
    outcome = export_report(
        node.root, period, args.format, args.out,
        actor=actor, public_key=args.public_key,
        witness_db=args.witness,
    )
    print(f"Wrote {outcome.out} ({args.format}, {outcome.events} events, sha256 "
          f"{outcome.sha256})")
    print(outcome.verification.summary())
    if outcome.logged_index is not None:
        print(f"Recorded as entry {outcome.logged_index} (report.exported) in the node's log.")
        return EXIT_OK
    print("The log failed verification: the report is marked FAILED and the export was not "
          "recorded in the untrusted log.", file=sys.stderr)
    return EXIT_INTEGRITY
