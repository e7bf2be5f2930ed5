"""`aggregator`: the coordinator's command. One module per subcommand; no logic here.

Exit codes: 0 success, 1 refused/failed (message on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = ("provision", "enrol", "plan", "run", "revoke", "spending", "predict")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """All subcommands, or just `only`: `run` imports TensorFlow, so a command named first
    (e.g. `aggregator plan validate`) registers its own module alone and answers in about a
    second."""
    parser = argparse.ArgumentParser(
        prog="aggregator",
        description="HealthFed aggregator: creates a federation (CA and hospital startup kits), "
        "runs training plans round by round over mutual TLS, and revokes hospitals.",
        epilog="Exit codes: 0 ok, 1 refused/failed, 2 usage error.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        if only is None or name == only:
            importlib.import_module(f"aggregator.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    only = words[0] if words and words[0] in COMMAND_MODULES else None
    args = build_parser(only).parse_args(words)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
