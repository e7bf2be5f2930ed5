"""`aggregator enrol REQUEST.json --out silo.pem`: sign a hospital's enrolment request."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from aggregator.config import load_aggregator_config
from aggregator.enrolment import enrol_silo
from healthfed_common.actors import add_operator_argument, operator_from
from healthfed_common.enrolment_request import read_request
from healthfed_common.errors import HealthFedError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "enrol",
        help="issue a hospital's certificate from its enrolment request and record its signing key",
        description="Checks REQUEST (made by `silo-node enrol` on the hospital's machine): the federation, "
        "that the silo is listed in aggregator.yaml, the CSR's signature, CN = silo id, an EC P-256 key, and "
        "that the hospital holds the signing key it sends. Then issues the certificate for the CSR's key "
        "(the hospital's private key never comes here), writes it to --out, records the enrolment in "
        "enrolment_dir (default enrolled/ next to aggregator.yaml) and in the audit log. Compare the "
        "printed fingerprint with the one the hospital told you by another channel. Needs ca.key.",
        epilog="Exit codes: 0 ok, 1 refused (message on stderr), 2 usage error.",
    )
    parser.add_argument("request", type=Path, metavar="REQUEST.json", help="the hospital's enrolment-request.json")
    parser.add_argument("--config", type=Path, required=True, help="aggregator.yaml")
    parser.add_argument("--out", type=Path, required=True, help="where to write the certificate to send back")
    parser.add_argument("--validity-days", type=int, default=365, help="certificate lifetime (default 365)")
    parser.add_argument("--replace-signing-key", action="store_true",
                        help="accept a signing key different from the one this silo enrolled with (audited); "
                        "only after confirming the change with the hospital")
    add_operator_argument(parser, "the coordinator's person signing this request")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        by = operator_from(args).removeprefix("person:")
        config = load_aggregator_config(args.config)
        request = read_request(args.request)
        enrolment = enrol_silo(config, request, by=by, replace_signing_key=args.replace_signing_key,
                               validity_days=args.validity_days)
    except HealthFedError as error:
        print(f"aggregator enrol: refused [{error.code}]: {error}", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    temporary = args.out.with_name(f".{args.out.name}.tmp")
    temporary.write_bytes(enrolment.certificate_pem)
    os.replace(temporary, args.out)
    record = enrolment.record
    print(f"enrolled silo {record.silo_id}: certificate {record.certificate_serial} (valid until "
          f"{record.not_after[:10]}) written to {args.out}")
    print(f"  signing key fingerprint: {record.fingerprint}")
    if enrolment.replaced_fingerprint:
        print(f"  replaced signing key {enrolment.replaced_fingerprint} (audited)")
    print("  compare the fingerprint with the one the hospital gave you by another channel; then send it "
          f"{args.out.name}: silo-node enrol --config silo.yaml --install-certificate {args.out.name}")
    return 0
