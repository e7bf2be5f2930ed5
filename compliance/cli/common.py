"""Arguments and exit codes shared by the subcommands."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from compliance.errors import LogNotFound
from compliance.node_dir import NodePaths
from healthfed_common.actors import add_operator_argument, operator_from

EXIT_OK = 0
EXIT_INTEGRITY = 1
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_INTERNAL = 5

EXIT_CODES_HELP = """\
exit codes:
  0  success (the log verified; the report was written; events were listed)
  1  the audit log FAILED verification: tampering or corruption (an edited, removed,
     inserted or reordered entry, a truncated tail, a rollback caught by a witness, or a
     damaged/truncated file that cannot be read whole); the first bad entry and the reason
     are named
  2  the command line was wrong (see --help)
  3  an input is missing or invalid (node directory, a file that never was an audit log,
     key, witness database, record of processing, dates, output path, no person named
     with --by or $HEALTHFED_OPERATOR)
  5  the tool failed unexpectedly (COMPLIANCE_INTERNAL_ERROR): a defect, not a verdict on
     the log; the traceback is printed
"""


def add_log_arguments(parser: argparse.ArgumentParser) -> None:
    """--node DIR, or --db FILE with --public-key FILE."""
    where = parser.add_argument_group("which log")
    where.add_argument(
        "--node", type=Path, metavar="DIR",
        help="node state directory (holds audit/audit.sqlite3 and audit/signing.key)",
    )
    where.add_argument("--db", type=Path, metavar="FILE",
                       help="an audit log file, instead of --node (needs --public-key)")
    where.add_argument(
        "--public-key", type=Path, metavar="FILE",
        help="the node's public key as pinned at enrolment (PEM, raw 32 bytes or hex); "
             "overrides the key found in the node directory",
    )


@dataclass(frozen=True)
class LogLocation:
    """Where the log is and which node directory (if any) it belongs to."""

    db: Path
    node: NodePaths | None


def locate_log(args: argparse.Namespace, parser: argparse.ArgumentParser) -> LogLocation:
    """Resolve --node/--db into a log path; usage errors exit with code 2."""
    if (args.node is None) == (args.db is None):
        parser.error("give exactly one of --node DIR or --db FILE")
    if args.db is not None:
        if args.public_key is None:
            parser.error("--db needs --public-key FILE (the key the log must verify with)")
        if not args.db.is_file():
            raise LogNotFound(f"no audit log at {args.db}")
        return LogLocation(args.db, None)
    node = NodePaths(args.node)
    node.require_log()
    return LogLocation(node.audit_db, node)


def add_person_arguments(parser: argparse.ArgumentParser, role: str) -> None:
    """--by NAME (and the hidden legacy --actor alias): who is recorded in the log."""
    add_operator_argument(parser, role)
    parser.add_argument("--actor", dest="by", help=argparse.SUPPRESS)


def person_or_refuse(args: argparse.Namespace) -> str:
    """`person:NAME` from --by or $HEALTHFED_OPERATOR; raises OperatorRequired (exit 3)."""
    return operator_from(args)
