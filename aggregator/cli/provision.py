"""`aggregator provision`: create a federation's CA, server certificate and hospital kits."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aggregator.provisioning import provision_federation


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "provision",
        help="create a federation: CA, aggregator certificate and one startup kit per hospital",
        description="Creates OUT/aggregator (CA, server certificate, aggregator.yaml — keep ca.key "
        "safe) and OUT/kits/<silo-id> (silo.yaml, certificate, key, CA bundle) for each hospital. "
        "Send each hospital only its own kit directory. The aggregator keeps its state in SQLite "
        "under state_dir; to use PostgreSQL instead, add database_url: postgresql://user:password@"
        "host:5432/database to aggregator.yaml.",
    )
    parser.add_argument("--federation", required=True, help="federation name, e.g. cardiology-2026")
    parser.add_argument("--silos", required=True, help="comma-separated silo ids, e.g. st-marys,general,county")
    parser.add_argument("--address", required=True, help="host:port hospitals will connect to, e.g. fl.example.org:50051")
    parser.add_argument("--listen", default=None, help="host:port the aggregator binds (default: --address)")
    parser.add_argument("--validity-days", type=int, default=365, help="silo certificate lifetime (default 365)")
    parser.add_argument("--out", type=Path, required=True, help="empty directory to create the federation in")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    silos = [s.strip() for s in args.silos.split(",") if s.strip()]
    try:
        federation = provision_federation(
            args.out, args.federation, silos, args.address, listen_address=args.listen,
            validity_days=args.validity_days,
        )
    except (FileExistsError, ValueError) as error:
        print(f"aggregator provision: {error}", file=sys.stderr)
        return 1
    print(f"federation {args.federation!r} created")
    print(f"  aggregator config: {federation.aggregator_config}")
    for silo_id, kit in federation.kits.items():
        print(f"  startup kit for {silo_id}: {kit}")
    return 0
