"""`silo-node`: the command hospital IT runs. Each subcommand lives in its own module in
this package and exposes `register(subparsers)`; no business logic lives here.

Exit codes: 0 success, 1 operation refused or failed (a coded message on stderr,
`refused [CODE]: ...`, never a traceback for a wrong path or file), 2 usage error.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMAND_MODULES = ("enrol", "check", "run", "data", "plans", "egress", "ledger")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="silo-node",
        description="HealthFed hospital silo node: registers local datasets behind a "
        "de-identification and minimisation layer, approves training plans, and trains "
        "with the federation over outbound mutual-TLS connections only.",
        epilog="Exit codes: 0 ok, 1 refused/failed, 2 usage error.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"silo_node.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    # Everything a silo writes (keys, database, audit log, de-identified datasets) is for
    # this hospital's service account only: files 0600, folders 0700 from the first byte.
    # (Restored on return, so calling main() in-process leaves the caller's umask alone.)
    previous = os.umask(0o077)
    try:
        args = build_parser().parse_args(argv)
        from silo_node.cli.data import resolve_state_dir

        resolve_state_dir(args)
        try:
            return int(args.func(args) or 0)
        except OSError as error:  # a path given cannot be used (a file for a folder, permissions): no traceback
            where = f" {error.filename}:" if error.filename else ""
            print(f"silo-node: refused [PATH_UNUSABLE]:{where} {error.strerror or type(error).__name__}", file=sys.stderr)
            return 1
    finally:
        os.umask(previous)


if __name__ == "__main__":
    sys.exit(main())
