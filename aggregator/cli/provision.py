"""`aggregator provision`: create a federation's CA, server certificate and hospital kit skeletons."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aggregator.provisioning import provision_federation


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "provision",
        help="create a federation: CA, aggregator certificate and one startup-kit skeleton per hospital",
        description="Creates OUT/aggregator (CA, server certificate, aggregator.yaml — keep ca.key "
        "safe) and OUT/kits/<silo-id> (silo.yaml and the CA certificate, no key) for each hospital. "
        "Send each hospital only its own kit directory; the hospital generates its keys itself "
        "(`silo-node enrol`) and sends back a request that you sign with `aggregator enrol`. The "
        "aggregator keeps its state in SQLite under state_dir; to use PostgreSQL instead, add "
        "database_url: postgresql://user:password@host:5432/database to aggregator.yaml.",
    )
    parser.add_argument("--federation", required=True, help="federation name, e.g. cardiology-2026")
    parser.add_argument("--silos", required=True, help="comma-separated silo ids, e.g. st-marys,general,county")
    parser.add_argument("--address", required=True, help="host:port hospitals will connect to, e.g. fl.example.org:50051")
    parser.add_argument("--listen", default=None, help="host:port the aggregator binds (default: --address)")
    parser.add_argument("--out", type=Path, required=True, help="empty directory to create the federation in")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    silos = [s.strip() for s in args.silos.split(",") if s.strip()]
    try:
        federation = provision_federation(args.out, args.federation, silos, args.address, listen_address=args.listen)
    except (FileExistsError, ValueError) as error:
        code = "FEDERATION_EXISTS" if isinstance(error, FileExistsError) else "PROVISION_INVALID"
        print(f"aggregator provision: refused [{code}]: {error}", file=sys.stderr)
        return 1
    print(f"federation {args.federation!r} created")
    print(f"  aggregator config: {federation.aggregator_config} (keep ca.key offline if you can)")
    for silo_id, kit in federation.kits.items():
        print(f"  startup kit for {silo_id}: {kit} (silo.yaml and ca.pem; no key)")
    print("next steps:")
    print("  1. send each hospital only its own kit folder")
    print("  2. each hospital runs `silo-node enrol --config silo.yaml --by NAME` on its own machine and sends "
          "you enrolment-request.json (and tells you its signing-key fingerprint by another channel)")
    print(f"  3. sign each request: aggregator enrol --config {federation.aggregator_config} "
          "enrolment-request.json --out silo.pem --by NAME; compare the fingerprint; send silo.pem back")
    print("  4. the hospital installs it: silo-node enrol --config silo.yaml --install-certificate silo.pem")
    return 0
