"""`compliance verify`: prove a node's audit log intact or name the first bad entry."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from compliance.audit_log import AuditLog
from compliance.cli.common import (
    EXIT_CODES_HELP,
    EXIT_INTEGRITY,
    EXIT_OK,
    add_log_arguments,
    add_person_arguments,
    locate_log,
    person_or_refuse,
)
from compliance.errors import ComplianceError, LogCorrupt
from compliance.node_check import NodeCheck, check_log
from compliance.node_dir import NodePaths

DESCRIPTION = """\
Recompute the Merkle tree of a node's audit log from the stored entries, check every signed
checkpoint (signature, size, root) and the RFC 9162 consistency proof between successive
checkpoints. Any edit, deletion, insertion, reordering or truncation of entries is reported
with the index of the first bad entry and, for removed entries, the exact range removed. A
log file that is damaged or truncated so that it cannot be read whole FAILS (exit 1).

Rollback — the newest entries removed together with their checkpoints — leaves a shorter log
that is internally consistent. It is caught against a witness, which holds the checkpoints the
other side handed over:
  - a silo's log: a copy of the aggregator's STATE/audit/witness.sqlite3 passed with --witness
    (for a federation provisioned on one host it is found automatically in
    ../../aggregator/state/audit/witness.sqlite3), and the size of the last checkpoint the
    aggregator accepted, which the silo keeps in DIR/silo.sqlite3;
  - the aggregator's log: each hospital's STATE/audit/witness.sqlite3, which holds the
    aggregator's checkpoints that hospital accepted. Ask the hospitals for copies and pass
    each with --witness (for a federation provisioned on one host they are found
    automatically in ../../kits/*/state/audit/witness.sqlite3). Checking against several
    hospitals also shows a coordinator that showed them different histories.
Keep copies outside the node folder: DIR/audit/witness.sqlite3 is the node's own store of the
other side's checkpoints, and naming it as the witness of its own log is refused. Entries
appended after the last witnessed checkpoint are named: no witness vouches for them yet.
Without any witness the result says the rollback check is UNVERIFIABLE.

For the strongest check, also pass the public key you received when the node was enrolled
(--public-key): it catches a history rewritten and re-signed by someone who obtained the
node's key.

Each verification of a node directory that finds the log intact is itself recorded in that
log (audit.verified, naming the person from --by or $HEALTHFED_OPERATOR); pass --no-record to
verify a read-only copy without recording.
"""

EXAMPLES = """\
examples:
  compliance verify --node /var/lib/healthfed/silo --by "A. Officer"
  compliance verify --node /var/lib/healthfed/silo --public-key st-marys.pub \\
      --witness copy-of-aggregator-witness.sqlite3 --by "A. Officer"
  compliance verify --db copy-of-audit.sqlite3 --public-key st-marys.pub --json
  compliance verify --node /var/lib/healthfed/aggregator --witness st-marys-witness.sqlite3 \
      --witness riverside-witness.sqlite3 --by "A. Officer"
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "verify", help="check a node's audit log for tampering",
        description=DESCRIPTION, epilog=EXAMPLES + "\n" + EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_log_arguments(parser)
    parser.add_argument("--witness", type=Path, metavar="FILE", action="append",
                        help="a witness database holding checkpoints this node handed over (the "
                             "aggregator's audit/witness.sqlite3 for a silo; a hospital's for the "
                             "aggregator); repeat it for several (default with --node: found "
                             "automatically, see above)")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    add_person_arguments(parser, "the person verifying")
    parser.add_argument("--no-record", action="store_true",
                        help="do not record this verification in the node's log (read-only copy)")
    parser.set_defaults(run=run, parser=parser)


def run(args: argparse.Namespace) -> int:
    location = locate_log(args, args.parser)
    record = location.node is not None and not args.no_record
    actor = person_or_refuse(args) if record else None
    try:
        check = check_log(location.db, location.node, args.public_key, args.witness)
    except LogCorrupt as exc:
        _print_corrupt(args, location.db, exc)
        return EXIT_INTEGRITY
    recorded = None
    if actor is not None and location.node is not None and check.result.ok:
        recorded = _record(location.node, check, actor)
    _print(args, check, recorded)
    return EXIT_OK if check.result.ok else EXIT_INTEGRITY


def _record(node: NodePaths, check: NodeCheck, actor: str) -> int | str:
    """Append audit.verified; return its index, or why it could not be recorded."""
    if not node.signing_key.is_file():
        return f"not recorded: {node.signing_key} is missing (a read-only copy? use --no-record)"
    result = check.result
    try:
        with AuditLog.open(node.audit_db, node.signing_key, check.raw.origin or "") as log:
            return log.record(
                "audit.verified", actor=actor,
                detail={
                    "entries": result.entries,
                    "checkpoints_checked": result.checkpoints_checked,
                    "witness_checkpoints_checked": result.witness_checkpoints_checked,
                    "rollback": "checked" if result.rollback_checked else "unverifiable",
                    "rollback_anchor": result.rollback_anchor,
                    "trusted_key_fingerprint": result.trusted_key_fingerprint,
                    "trusted_key_source": check.key_source,
                },
            )
    except (ComplianceError, OSError) as exc:
        return f"not recorded: {exc}"


def _print_corrupt(args: argparse.Namespace, db: Path, exc: LogCorrupt) -> None:
    if args.json:
        print(json.dumps({"ok": False, "log": str(db), "error": exc.code, "first_bad_index": None,
                          "reason": str(exc)}, indent=2))
    else:
        print(f"Audit log:    {db}")
        print(f"FAILED [{exc.code}]: {exc}")


def _print(args: argparse.Namespace, check: NodeCheck, recorded: int | str | None) -> None:
    result = check.result
    if args.json:
        print(json.dumps({
            "ok": result.ok,
            "log": str(result.db_path),
            "origin": result.origin,
            "entries": result.entries,
            "checkpoints_checked": result.checkpoints_checked,
            "consistency_proofs_checked": result.consistency_proofs_checked,
            "witness_checkpoints_checked": result.witness_checkpoints_checked,
            "witness": check.witness_source,
            "rollback": "checked" if result.rollback_checked else "UNVERIFIABLE",
            "rollback_anchor": result.rollback_anchor,
            "entries_vouched_for_by_a_witness": result.vouched_size if result.rollback_checked else 0,
            "trusted_key_fingerprint": result.trusted_key_fingerprint,
            "trusted_key_source": check.key_source,
            "first_bad_index": None if result.problem is None else result.problem.index,
            "reason": None if result.problem is None else result.problem.reason,
            "latest_checkpoint": None if result.latest is None else result.latest.to_dict(),
            "recorded_as_entry": recorded if isinstance(recorded, int) else None,
        }, indent=2))
    else:
        print(f"Audit log:    {result.db_path} (origin {result.origin})")
        print(f"Trusted key:  {result.trusted_key_fingerprint} ({check.key_source})")
        print(f"Witness:      {check.witness_source or 'none found'}")
        if result.latest is not None:
            print(f"Latest valid checkpoint: size {result.latest.size}, root "
                  f"{result.latest.root_hash}, signed {result.latest.timestamp}")
        print(result.summary())
        if result.problem is not None:
            print(f"First bad entry: {result.problem.index}")
        if isinstance(recorded, int):
            print(f"Recorded as entry {recorded} (audit.verified) in the node's log.")
    if isinstance(recorded, str):
        print(f"compliance verify: warning: this verification was {recorded}", file=sys.stderr)
