"""Entry point of the `compliance` console script (see pyproject.toml)."""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Sequence

from compliance.cli import export, forward, show, verify
from compliance.cli.common import EXIT_CODES_HELP, EXIT_INPUT, EXIT_INTEGRITY, EXIT_INTERNAL, EXIT_USAGE
from compliance.errors import ComplianceError, LogCorrupt
from healthfed_common.error_codes import ErrorCode
from healthfed_common.errors import HealthFedError

DESCRIPTION = """\
HealthFed compliance tools for a node's tamper-evident audit log: verify it, list its
events, and export audit reports for regulators (PDF, HTML, CSV, FHIR R4).
Run `compliance COMMAND --help` for each command.
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subcommand per module."""
    parser = argparse.ArgumentParser(
        prog="compliance", description=DESCRIPTION, epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module in (verify, export, show, forward):
        module.add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (documented in --help)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "run"):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(args.run(args))
    except LogCorrupt as exc:
        print(f"compliance: FAILED [{exc.code}]: {exc}", file=sys.stderr)
        return EXIT_INTEGRITY
    except (ComplianceError, HealthFedError) as exc:
        print(f"compliance: error [{exc.code}]: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except OSError as exc:
        print(f"compliance: error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except Exception as exc:  # noqa: BLE001 - a defect must not exit 1, which means tampering
        traceback.print_exc()
        print(f"compliance: error [{ErrorCode.COMPLIANCE_INTERNAL_ERROR}]: the command failed unexpectedly "
              f"({type(exc).__name__}); this is a defect, not a verdict on the audit log", file=sys.stderr)
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
