"""`compliance verify`: prove a node's audit log intact or name the first bad entry."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from compliance.cli.common import (
    EXIT_CODES_HELP,
    EXIT_INTEGRITY,
    EXIT_OK,
    add_log_arguments,
    locate_log,
)
from compliance.log_store import read_raw_log
from compliance.node_dir import trusted_public_key
from compliance.verify import verify_log
from compliance.witness import read_witnessed

DESCRIPTION = """\
Recompute the Merkle tree of a node's audit log from the stored entries, check every signed
checkpoint (signature, size, root) and the RFC 9162 consistency proof between successive
checkpoints. Any edit, deletion, insertion, reordering or truncation of entries is reported
with the index of the first bad entry.

For the strongest check, pass the public key you received when the node was enrolled
(--public-key) and, for a silo, the aggregator's witness database (--witness): together they
also catch a history rewritten and re-signed by someone who obtained the node's key.
"""

EXAMPLES = """\
examples:
  compliance verify --node /var/lib/healthfed/silo
  compliance verify --node /var/lib/healthfed/silo --public-key st-marys.pub \\
      --witness /var/lib/healthfed/aggregator/audit/witness.sqlite3
  compliance verify --db copy-of-audit.sqlite3 --public-key st-marys.pub --json
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "verify", help="check a node's audit log for tampering",
        description=DESCRIPTION, epilog=EXAMPLES + "\n" + EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_log_arguments(parser)
    parser.add_argument("--witness", type=Path, metavar="FILE",
                        help="a witness database (the aggregator's audit/witness.sqlite3) "
                             "holding checkpoints this node handed over")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.set_defaults(run=run, parser=parser)


def run(args: argparse.Namespace) -> int:
    location = locate_log(args, args.parser)
    key, key_source = trusted_public_key(args.public_key, location.node)
    witnessed = None
    if args.witness is not None:
        origin = read_raw_log(location.db).origin or ""
        witnessed = read_witnessed(args.witness, origin)
    result = verify_log(location.db, key, witnessed)
    if args.json:
        print(json.dumps({
            "ok": result.ok,
            "log": str(result.db_path),
            "origin": result.origin,
            "entries": result.entries,
            "checkpoints_checked": result.checkpoints_checked,
            "consistency_proofs_checked": result.consistency_proofs_checked,
            "witness_checkpoints_checked": result.witness_checkpoints_checked,
            "trusted_key_fingerprint": result.trusted_key_fingerprint,
            "trusted_key_source": key_source,
            "first_bad_index": None if result.problem is None else result.problem.index,
            "reason": None if result.problem is None else result.problem.reason,
            "latest_checkpoint": None if result.latest is None else result.latest.to_dict(),
        }, indent=2))
    else:
        print(f"Audit log:    {result.db_path} (origin {result.origin})")
        print(f"Trusted key:  {result.trusted_key_fingerprint} ({key_source})")
        if result.latest is not None:
            print(f"Latest valid checkpoint: size {result.latest.size}, root "
                  f"{result.latest.root_hash}, signed {result.latest.timestamp}")
        print(result.summary())
        if result.problem is not None:
            print(f"First bad entry: {result.problem.index}")
    return EXIT_OK if result.ok else EXIT_INTEGRITY
