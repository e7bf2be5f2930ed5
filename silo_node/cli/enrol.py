"""`silo-node enrol`: make this hospital's keys here and ask the coordinator for a certificate;
`--install-certificate FILE` puts the certificate it sent back into the kit."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from healthfed_common.actors import add_operator_argument, operator_from
from healthfed_common.errors import HealthFedError
from healthfed_common.silo_keys import fingerprint, load_signing_key, public_key_raw
from healthfed_common.startup_kit import load_silo_config
from silo_node.enrolment import create_enrolment_request, install_certificate, record_in_audit_log


def _fail(error: HealthFedError) -> int:
    print(f"silo-node enrol: refused [{error.code}]: {error}", file=sys.stderr)
    return 1


def _request(args: argparse.Namespace) -> int:
    try:
        actor = operator_from(args)
        config = load_silo_config(args.config)
        written = create_enrolment_request(config, args.config)
    except HealthFedError as error:
        return _fail(error)
    record_in_audit_log(config, actor, "enrolment keys generated",
                        signing_key_fingerprint=written.fingerprint)
    print(f"silo {config.silo_id}: keys generated on this machine (they never leave it)")
    print(f"  TLS key:      {written.tls_key_path} (mode 0600)")
    print(f"  signing key:  {written.signing_key_path} (mode 0600; back it up: a lost key means re-enrolling)")
    print(f"  signing key fingerprint: {written.fingerprint}")
    print(f"  request:      {written.request_path}")
    print("next steps:")
    print(f"  1. send {written.request_path.name} to the coordinator, and tell them the fingerprint above by "
          "another channel (phone, signed letter) so they can check it")
    print("  2. the coordinator runs `aggregator enrol` and sends back a certificate (silo.pem)")
    print(f"  3. install it: silo-node enrol --config {args.config} --install-certificate silo.pem")
    print("  4. before approving a secure-aggregation plan, check that its cohort lists this fingerprint for "
          f"{config.silo_id} (`silo-node plans show`)")
    return 0


def _install(args: argparse.Namespace) -> int:
    try:
        actor = operator_from(args)
        config = load_silo_config(args.config)
        certificate = install_certificate(config, args.install_certificate)
    except HealthFedError as error:
        return _fail(error)
    serial = format(certificate.serial_number, "x")
    expires = certificate.not_valid_after_utc.date().isoformat()
    record_in_audit_log(config, actor, "certificate installed", serial=serial, not_after=expires)
    print(f"silo {config.silo_id}: certificate {serial} installed at {config.tls.certificate} (valid until {expires})")
    if config.signing_key.exists():
        try:
            print(f"  signing key fingerprint: {fingerprint(public_key_raw(load_signing_key(config.signing_key)))}")
        except HealthFedError as error:
            print(f"  warning [{error.code}]: {error}", file=sys.stderr)
    print(f"next: register datasets and start the node: silo-node run --config {args.config}")
    return 0


def _enrol(args: argparse.Namespace) -> int:
    return _install(args) if args.install_certificate is not None else _request(args)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "enrol",
        help="generate this hospital's keys and an enrolment request; install the certificate sent back",
        description="Run on the hospital's own machine, in the startup kit. Generates the TLS key (silo.key) "
        "and the long-term Ed25519 signing key (signing.key), both mode 0600, and writes "
        "enrolment-request.json (a CSR and the public signing key only) for the coordinator. Refuses if the "
        "keys already exist. With --install-certificate FILE: checks that the certificate the coordinator "
        "sent back is for this kit's key, this silo and the kit's CA, then installs it as silo.pem.",
        epilog="Exit codes: 0 ok, 1 refused (message on stderr), 2 usage error.",
    )
    parser.add_argument("--config", type=Path, required=True, help="the kit's silo.yaml")
    add_operator_argument(parser, "the hospital IT person enrolling this silo")
    parser.add_argument("--install-certificate", type=Path, default=None, metavar="FILE",
                        help="install the certificate the coordinator returned instead of making a request")
    parser.set_defaults(func=_enrol)
