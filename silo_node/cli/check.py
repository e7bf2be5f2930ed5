"""`silo-node check`: is this silo ready to join? Kit files, certificates, clock, DNS, TCP,
TLS with the aggregator's identity, one line each with what to fix. Sends no data."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any



def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "check", help="test the startup kit and the connection to the aggregator, and say what to fix",
        description="Checks, in order: silo.yaml; the kit files (present, readable, private keys mode 0600); "
        "the certificates (parse, valid now, issued by the kit's CA, CN = silo_id, key matches); then "
        "DNS resolution of the aggregator, a TCP connection, and a mutual-TLS handshake that verifies the "
        "aggregator's certificate for aggregator_tls_name (an expired or not-yet-valid certificate is "
        "explained with both clocks) and that the aggregator answers gRPC. Prints OK/WARN/FAIL per line. "
        "No training data is read or sent.",
        epilog="Exit codes: 0 every check passed (warnings allowed), 1 a check failed, 2 usage error.",
    )
    parser.add_argument("--config", type=Path, required=True, metavar="FILE", help="silo.yaml of this silo's kit")
    parser.add_argument("--timeout", type=float, default=5.0, metavar="S",
                        help="seconds to wait for each network step (default 5)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from silo_node.diagnostics import FAIL, run_checks  # loads gRPC: not for `--help`

    checks = run_checks(args.config, timeout_s=args.timeout)
    for check in checks:
        print(check.line())
    failed = [c for c in checks if c.status == FAIL]
    if failed:
        print(f"{len(failed)} check(s) failed: fix the lines marked FAIL and run `silo-node check` again",
              file=sys.stderr)
        return 1
    print("ready: `silo-node run --config " + str(args.config) + "` will reach the aggregator")
    return 0
