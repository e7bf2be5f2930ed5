"""One naming scheme for who did something, on every node's audit log.

An audit entry's `actor` is either a person (`person:<name>`: a data steward approving a plan,
hospital IT registering a dataset, a coordinator enrolling a hospital, a compliance officer
exporting a report) or a node acting on its own (`silo:<id>`, `aggregator:<federation>`). The
node whose log holds the entry is the log's origin, so a person's entry names the node too.

Commands that change state on behalf of a person take `--by NAME`; without it they fall back
to the `HEALTHFED_OPERATOR` environment variable and refuse when neither names anyone, so no
human action is ever recorded as done by "root" or by the software itself.
"""

from __future__ import annotations

import argparse
import os
import re

from healthfed_common.errors import HealthFedError

OPERATOR_ENV = "HEALTHFED_OPERATOR"
_NAME = re.compile(r"^[^\x00-\x1f\x7f]{1,128}$")


class OperatorRequired(HealthFedError, ValueError):
    """A state-changing command was run without naming the person who ran it."""

    code = "OPERATOR_REQUIRED"


def person(name: str) -> str:
    """The actor string of a person, e.g. `person:Dr. A. Jones`."""
    cleaned = name.strip()
    if not _NAME.match(cleaned):
        raise OperatorRequired("the person's name must be 1-128 printable characters")
    return f"person:{cleaned}"


def silo(silo_id: str) -> str:
    return f"silo:{silo_id}"


def aggregator(federation: str = "") -> str:
    return f"aggregator:{federation}" if federation else "aggregator"


def add_operator_argument(parser: argparse.ArgumentParser, role: str = "the person running this command") -> None:
    """`--by NAME` on a state-changing subcommand (default: $HEALTHFED_OPERATOR)."""
    parser.add_argument(
        "--by", metavar="NAME", default=None,
        help=f"{role}, recorded in the audit log (default: ${OPERATOR_ENV}; required if that is unset)",
    )


def operator_from(args: argparse.Namespace) -> str:
    """The `person:` actor for a command's `--by` (or $HEALTHFED_OPERATOR); refuses when neither
    names anyone."""
    name = str(getattr(args, "by", None) or os.environ.get(OPERATOR_ENV, ""))
    if not name.strip():
        raise OperatorRequired(
            f"say who you are: pass --by NAME (or set {OPERATOR_ENV}); every change is recorded with the person who made it"
        )
    return person(name)
