"""`aggregator revoke SILO`: refuse a hospital's certificate from now on."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from aggregator.audit import AggregatorAudit
from aggregator.config import load_aggregator_config
from aggregator.enrolment import enrolment_record
from aggregator.state_store import open_state_store
from healthfed_common.actors import OperatorRequired, add_operator_argument, operator_from
from healthfed_common.errors import HealthFedError
from healthfed_common.startup_kit import ConfigInvalid
from aggregator.pki import certificate_serial_hex


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "revoke",
        help="revoke a hospital's certificate (takes effect on its next call)",
        description="Adds the certificate of SILO (or the certificate file given with --certificate) to "
        "the aggregator's revocation list. A running aggregator refuses it on the next call.",
    )
    parser.add_argument("silo", help="silo id to revoke")
    parser.add_argument("--config", type=Path, required=True, help="aggregator.yaml")
    parser.add_argument("--certificate", type=Path, default=None,
                        help="certificate PEM to revoke (default: the one issued when SILO enrolled)")
    parser.add_argument("--reason", default="revoked by coordinator", help="recorded with the revocation")
    add_operator_argument(parser, "the coordinator who revokes")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        actor = operator_from(args)
    except OperatorRequired as error:
        print(f"aggregator revoke: refused [{error.code}]: {error}", file=sys.stderr)
        return 1
    try:
        config = load_aggregator_config(args.config)
    except ConfigInvalid as error:
        print(f"aggregator revoke: {error}", file=sys.stderr)
        return 1
    if args.certificate is not None:
        if not args.certificate.exists():
            print(f"aggregator revoke: no certificate at {args.certificate}", file=sys.stderr)
            return 1
        serial = certificate_serial_hex(args.certificate.read_bytes())
    else:  # the certificate issued when the silo enrolled (`aggregator enrol`)
        try:
            record = enrolment_record(config, args.silo)
        except HealthFedError as error:
            print(f"aggregator revoke: refused [{error.code}]: {error}", file=sys.stderr)
            return 1
        if record is None:
            print(f"aggregator revoke: {args.silo} has no enrolment record in {config.enrolment_dir}; "
                  "pass --certificate", file=sys.stderr)
            return 1
        serial = record.certificate_serial
    audit = AggregatorAudit(config.state_dir)  # opened first: no revocation goes unaudited
    try:
        with open_state_store(config.state_database()) as store:
            store.revoke(serial, args.silo, args.reason)
    except HealthFedError as error:
        audit.close()
        print(f"aggregator revoke: {error}", file=sys.stderr)
        return 1
    audit.record("certificate.revoked", actor=actor, entities={"silo": args.silo, "serial": serial},
                 detail={"reason": args.reason, "silo": args.silo, "serial": serial})
    audit.close()
    print(f"revoked certificate {serial} of {args.silo}")
    return 0
