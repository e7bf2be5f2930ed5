"""`silo-node data`: register, list, show and remove the datasets this silo may train on.

Also holds the two helpers every silo-node data-layer command shares: the --state-dir
option and opening the silo database in it.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compliance.audit_log import AuditLog
from compliance.errors import ComplianceError
from healthfed_common.actors import OperatorRequired, add_operator_argument, operator_from
from healthfed_common.errors import HealthFedError
from healthfed_common.startup_kit import load_silo_config
from silo_node.datasets.errors import DataLayerError
from silo_node.datasets.policy import DatasetPolicy
from silo_node.storage import open_silo_db

if TYPE_CHECKING:
    from silo_node.datasets.registry import DatasetRegistry

STATE_ENV = "HEALTHFED_SILO_STATE"
DB_FILE = "silo.sqlite3"


def add_state_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir", type=Path, default=None,
        help=f"the silo's state folder (holds {DB_FILE} and the de-identified datasets); "
        f"default: ${STATE_ENV}, else the state_dir of the kit given with --config, else ./silo-state",
    )


def resolve_state_dir(args: argparse.Namespace) -> None:
    """Fills in --state-dir when it was not given: $HEALTHFED_SILO_STATE, else the state folder
    the kit's silo.yaml names (--config) -- so `data add ... --config kit/silo.yaml` registers
    into the folder `silo-node run` will serve from, not into ./silo-state -- else ./silo-state.
    A --config that cannot be read is left to the command, which refuses it with its code."""
    if getattr(args, "state_dir", "absent") is not None:
        return
    if os.environ.get(STATE_ENV):
        args.state_dir = Path(os.environ[STATE_ENV])
        return
    config = getattr(args, "config", None)
    if config is not None:
        try:
            args.state_dir = load_silo_config(config).state_dir
            return
        except (HealthFedError, OSError, ValueError):
            pass
    args.state_dir = Path("silo-state")


def open_db(args: argparse.Namespace) -> sqlite3.Connection:
    return open_silo_db(Path(args.state_dir) / DB_FILE)


class NoAuditLog(DataLayerError, PermissionError):
    """A state-changing command on a folder whose actions cannot be audited (no node
    identity, so no audit log): refused rather than done silently."""

    code = "NO_AUDIT_LOG"


class NodeConfigInvalid(DataLayerError, ValueError):
    """--config does not name a usable silo.yaml, or names another silo than the folder's."""

    code = "NODE_CONFIG_INVALID"


def fail(error: DataLayerError | HealthFedError | ComplianceError) -> int:
    print(f"refused [{error.code}]: {error}", file=sys.stderr)
    return 1


def add_audited(parser: argparse.ArgumentParser, role: str) -> None:
    """--by NAME and --config FILE: every state-changing command names its person and writes
    to the node's audit log."""
    add_operator_argument(parser, role)
    parser.add_argument(
        "--config", type=Path, metavar="FILE", default=None,
        help="silo.yaml of this silo's startup kit; needed once for a state folder not created "
        "from the kit, to bind it to its silo so its actions are audited",
    )


def audited(args: argparse.Namespace) -> tuple[str, AuditLog]:
    """The acting person (`person:NAME`) and the node's open audit log, or a coded refusal
    before anything changes: no name (OPERATOR_REQUIRED), no audit log (NO_AUDIT_LOG)."""
    actor = operator_from(args)
    state = Path(args.state_dir)
    silo_id = None
    if getattr(args, "config", None) is not None:
        try:
            silo_id = load_silo_config(args.config).silo_id
        except (HealthFedError, OSError, ValueError) as error:
            raise NodeConfigInvalid(f"cannot read {args.config}: {error}") from None
    from silo_node.node import NodeIdentityUnknown, open_audit_log  # loads pandas: only when auditing

    try:
        log = open_audit_log(state, silo_id)
    except NodeIdentityUnknown as error:
        raise NodeConfigInvalid(str(error)) from None
    if log is None:
        raise NoAuditLog(
            f"state folder {state} was not created from a startup kit, so it has no node identity "
            "and this change could not be recorded in its tamper-evident audit log; pass "
            "--config silo.yaml (this silo's kit) once to bind the folder to its silo"
        )
    return actor, log


def _registry(args: argparse.Namespace, audit: AuditLog | None) -> DatasetRegistry:
    # Imported here, not at the top: the registry loads pandas (seconds), and every silo-node
    # command, `--help` included, imports this module for its shared helpers.
    from silo_node.datasets.registry import DatasetRegistry

    state = Path(args.state_dir)
    return DatasetRegistry(open_db(args), state / "datasets", audit=audit)


def _add(args: argparse.Namespace) -> int:
    try:
        actor, log = audited(args)
    except (DataLayerError, OperatorRequired, ComplianceError) as error:
        return fail(error)
    try:
        policy = DatasetPolicy.from_yaml(args.policy) if args.policy else None
        report = _registry(args, log).add(args.name, args.path, args.kind, policy, actor=actor)
    except DataLayerError as error:
        return fail(error)
    finally:
        log.close()
    print(report)
    return 0


def _list(args: argparse.Namespace) -> int:
    infos = _registry(args, None).list()
    if not infos:
        print("no datasets registered (add one with: silo-node data add NAME PATH --kind tabular --policy FILE)")
    for info in infos:
        print(f"{info.name:<24} {info.kind:<8} {info.n_records:>8} records  {info.n_train:>7} train  "
              f"{info.n_test:>6} test  registered {info.registered_at}")
    return 0


def _show(args: argparse.Namespace) -> int:
    try:
        info = _registry(args, None).show(args.name)
    except DataLayerError as error:
        return fail(error)
    print(info)
    print()
    print("Ingestion report:")
    print(info.report)
    return 0


def _remove(args: argparse.Namespace) -> int:
    try:
        actor, log = audited(args)
    except (DataLayerError, OperatorRequired, ComplianceError) as error:
        return fail(error)
    try:
        _registry(args, log).remove(args.name, actor=actor)
    except DataLayerError as error:
        return fail(error)
    finally:
        log.close()
    print(f"removed dataset {args.name!r} and its de-identified copy (the original export is untouched)")
    return 0


def _policy_template(args: argparse.Namespace) -> int:
    from silo_node.datasets.policy_template import template_for_export, write_template  # loads pandas

    try:
        template = template_for_export(args.path, args.label, encoding=args.encoding, delimiter=args.delimiter,
                                       sheet=args.sheet)
        if args.out is None:
            print(template.text, end="")
            return 0
        write_template(args.out, template.text, force=args.force)
    except DataLayerError as error:
        return fail(error)
    print(f"wrote {args.out}: {template.features} feature(s), {template.identifiers} identifier column(s) handled. "
          f"Review it, then: silo-node data add NAME {args.path} --kind tabular --policy {args.out} --config silo.yaml")
    return 0


def register(subparsers: Any) -> None:
    data = subparsers.add_parser(
        "data", help="register and manage the datasets training may use",
        description="Register hospital exports with the silo. Registration de-identifies the data "
        "(HIPAA Safe Harbor for tables, DICOM PS3.15 Annex E for images), keeps only the columns "
        "the policy allows, and stores that copy in the state folder; the original export is not "
        "read again.",
    )
    commands = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")

    add = commands.add_parser(
        "add", help="register a CSV/Parquet file or a DICOM folder",
        description="Register PATH as dataset NAME and print what was kept, generalised or dropped, "
        "and why. Refused (exit 1, nothing stored) if the export carries identifiers the policy "
        "does not handle, or is malformed (the message names the file and row or tag).",
        epilog="Example: silo-node data add heart exports/heart.csv --kind tabular --policy heart-policy.yaml",
    )
    add.add_argument("name", metavar="NAME", help="dataset name used by training plans (letters, digits, _ . -)")
    add.add_argument("path", metavar="PATH", type=Path, help="a .csv/.parquet/.xlsx file, or a folder of DICOM files")
    add.add_argument("--kind", required=True, choices=["tabular", "dicom"], help="what PATH holds")
    add.add_argument("--policy", type=Path, metavar="FILE",
                     help="YAML dataset policy: allowed features, label, identifier handling "
                     "(required for tabular; DICOM defaults to the Basic Profile and labels.csv)")
    add_audited(add, "who registers it")
    add_state_dir(add)
    add.set_defaults(func=_add)

    listing = commands.add_parser("list", help="list registered datasets", description="List registered datasets.")
    add_state_dir(listing)
    listing.set_defaults(func=_list)

    show = commands.add_parser("show", help="show one dataset and its ingestion report",
                               description="Show a dataset's policy, stored columns, hashes and ingestion report.")
    show.add_argument("name", metavar="NAME")
    add_state_dir(show)
    show.set_defaults(func=_show)

    remove = commands.add_parser("remove", help="remove a dataset and its de-identified copy",
                                 description="Forget a dataset and delete the silo's de-identified copy of it.")
    remove.add_argument("name", metavar="NAME")
    add_audited(remove, "who removes it")
    add_state_dir(remove)
    remove.set_defaults(func=_remove)


    template = commands.add_parser(
        "policy-template", help="propose a dataset policy from an export's columns",
        description="Reads EXPORT as `data add` would (encoding and delimiter detected), detects HIPAA Safe Harbor "
        "identifier columns and writes a commented dataset policy: identifiers dropped (ages over 89 capped with "
        "age_90) with the generalising alternatives named, numeric columns as features, short categorical "
        "columns as one_hot with their categories, free text left out. Nothing is registered or stored; review "
        "the file before `data add`.",
        epilog="Example: silo-node data policy-template exports/heart.csv --out heart-policy.yaml --label outcome",
    )
    template.add_argument("path", metavar="EXPORT", type=Path, help="a .csv/.tsv/.parquet/.xlsx export")
    template.add_argument("--out", type=Path, metavar="FILE", default=None, help="write here (default: print it)")
    template.add_argument("--label", default=None, help="the outcome column (default: guessed, and marked so)")
    template.add_argument("--encoding", default=None, help="the export's text encoding (default: detected)")
    template.add_argument("--delimiter", default=None, help="the export's field separator (default: sniffed)")
    template.add_argument("--sheet", default=None, help="an .xlsx export's sheet (default: its only sheet)")
    template.add_argument("--force", action="store_true", help="replace an existing --out file")
    template.set_defaults(func=_policy_template)
