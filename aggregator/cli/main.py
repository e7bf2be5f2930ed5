"""`aggregator`: the coordinator's command. One module per subcommand; no logic here.

Exit codes: 0 success, 1 refused/failed (message on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = ("provision", "enrol", "run", "revoke", "spending")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aggregator",
        description="HealthFed aggregator: creates a federation (CA and hospital startup kits), "
        "runs training plans round by round over mutual TLS, and revokes hospitals.",
        epilog="Exit codes: 0 ok, 1 refused/failed, 2 usage error.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"aggregator.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
