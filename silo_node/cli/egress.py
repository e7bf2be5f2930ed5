"""`silo-node egress`: everything that has left this silo (size and hash, per round)."""

from __future__ import annotations

import argparse
from typing import Any

from silo_node.cli.data import add_state_dir, open_db
from silo_node.egress import EgressRecord


def _egress(args: argparse.Namespace) -> int:
    entries = EgressRecord(open_db(args)).list(args.plan)
    if not entries:
        print("nothing has left this silo")
    for e in entries:
        print(f"{e.at}  plan {e.plan_hash[:16]}  round {e.round:>4}  {e.kind:<14} {e.bytes:>10} bytes  "
              f"sha256 {e.sha256}  to {e.recipient}")
    print(f"{len(entries)} payload(s), {sum(e.bytes for e in entries)} bytes in total")
    return 0


def register(subparsers: Any) -> None:
    egress = subparsers.add_parser(
        "egress", help="list every payload that left this silo",
        description="List every payload this silo released: when, for which plan and round, what kind "
        "(masked model update or aggregate metrics), its size and sha256, and to whom. The payloads "
        "themselves are not kept.",
    )
    egress.add_argument("--plan", metavar="HASH", help="only this plan (full hash)")
    add_state_dir(egress)
    egress.set_defaults(func=_egress)
