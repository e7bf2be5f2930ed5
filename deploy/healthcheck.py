#!/usr/bin/env python3
"""Container checks for HealthFed nodes: `preflight` before the node starts, `probe` while it
runs. The entrypoints (`deploy/silo/entrypoint.sh`, `deploy/aggregator/entrypoint.sh`) call
`preflight`; Docker's HEALTHCHECK and Kubernetes' liveness probe call `probe`.

Why a preflight: a hospital's IT team mounts a kit, a data folder and a state volume; a
wrong mount should stop the container at once with one sentence naming the path and the
fix, not as a Python traceback minutes later (or, worse, a silo running on a writable copy
of patient data). Each problem class has its own exit code so orchestration can tell them
apart:

    0  ok                      5  CERTIFICATE_INVALID (expired, wrong CA, wrong name, key mismatch)
    2  usage error             6  STATE_UNWRITABLE (the state volume cannot be written)
    3  KIT_MISSING (a file of  7  DATA_NOT_READ_ONLY / DATA_UNREADABLE (/data must be a
       the kit or the plan is     read-only mount)
       missing or unreadable)  8  PLAN_INVALID
    4  CONFIG_INVALID          9  KEY_PERMISSIONS (a silo private key readable by others)
    1  probe: unhealthy       10  CA_KEY_MOUNTED (the federation CA's private key in a silo kit)

`preflight` also renders the node's *effective* config into the state volume: the kit's
file with absolute TLS paths, `state_dir` set to the state volume and (aggregator) the
container's listen address and database URL. The kit itself stays read-only and unchanged.

Why `probe` needs no network: a silo opens no port, and an mTLS port cannot be probed
without a certificate. The probe checks that the process the entrypoint exec'd (pid file)
is alive and is the expected command, that the node's SQLite database opens read-only and
answers a query, and that the node's certificate has not expired.

Runs with the image's Python; imports only `healthfed_common` (and `aggregator.config` for
the aggregator role), never TensorFlow, so it answers in well under a second.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sqlite3
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

EXIT_OK = 0
EXIT_UNHEALTHY = 1
EXIT_USAGE = 2

RUNTIME_DIR = ".healthfed"  # inside the state volume: rendered config and pid file
PID_FILE = "pid"
AGGREGATOR_TLS_NAME = "healthfed-aggregator"  # = aggregator.pki.AGGREGATOR_TLS_NAME (silo images lack it)


class PreflightFailed(Exception):
    """One problem, with a stable code, an exit status and a message that names the fix."""

    EXIT_CODES = {
        "KIT_MISSING": 3, "CONFIG_INVALID": 4, "CERTIFICATE_INVALID": 5, "STATE_UNWRITABLE": 6,
        "DATA_NOT_READ_ONLY": 7, "DATA_UNREADABLE": 7, "PLAN_INVALID": 8, "KEY_PERMISSIONS": 9,
        "CA_KEY_MOUNTED": 10, "OPERATOR_REQUIRED": 11,
    }

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.exit_status = self.EXIT_CODES[code]


def _warn(message: str) -> None:
    print(f"healthfed preflight: warning: {message}", file=sys.stderr)


# --- files -------------------------------------------------------------------------------
def _readable_file(path: Path, what: str, fix: str) -> None:
    if not path.exists():
        raise PreflightFailed("KIT_MISSING", f"{what} {path} does not exist; {fix}")
    if not path.is_file():
        raise PreflightFailed("KIT_MISSING", f"{what} {path} is not a file; {fix}")
    try:
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as error:
        raise PreflightFailed(
            "KIT_MISSING", f"{what} {path} cannot be read by uid {os.getuid()} ({error.strerror}); {fix}"
        ) from None


def _writable_dir(path: Path, what: str) -> None:
    """Proves writability by writing (os.access lies for root and for read-only mounts)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as error:
        raise PreflightFailed(
            "STATE_UNWRITABLE",
            f"{what} {path} is not writable by uid {os.getuid()} ({error.strerror}); mount a writable "
            f"volume there owned by that user (e.g. docker volume, or a PVC with fsGroup)",
        ) from None


def _is_read_only_mount(path: Path) -> bool:
    return bool(os.statvfs(path).f_flag & os.ST_RDONLY)


def _check_data_dir(data_dir: Path) -> None:
    """/data holds the hospital's raw exports: readable, and never writable by the node."""
    if not data_dir.exists():
        _warn(f"no data directory at {data_dir}; `silo-node data add` will have no exports to read")
        return
    if not data_dir.is_dir() or not os.access(data_dir, os.R_OK | os.X_OK):
        raise PreflightFailed(
            "DATA_UNREADABLE", f"data directory {data_dir} is not a readable directory for uid {os.getuid()}; "
            "make the exports readable by the container user (files 0644/dirs 0755 or a matching group)",
        )
    if _is_read_only_mount(data_dir) or not os.access(data_dir, os.W_OK):
        return
    if os.environ.get("HEALTHFED_ALLOW_WRITABLE_DATA") == "1":
        _warn(f"data directory {data_dir} is writable (HEALTHFED_ALLOW_WRITABLE_DATA=1); mount it read-only")
        return
    raise PreflightFailed(
        "DATA_NOT_READ_ONLY",
        f"data directory {data_dir} is writable by this container; mount the hospital's data read-only "
        "(docker: -v /path/to/exports:/data:ro; compose: ':ro'; Kubernetes: readOnly: true), "
        "or set HEALTHFED_ALLOW_WRITABLE_DATA=1 to accept the risk",
    )


# --- certificates ----------------------------------------------------------------------
def _load_certificate(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError:
        raise PreflightFailed("CERTIFICATE_INVALID", f"{path} is not a PEM certificate") from None


@dataclass(frozen=True)
class CertificateFacts:
    common_name: str
    dns_names: tuple[str, ...]
    expires: dt.datetime


def check_certificate(ca_path: Path, cert_path: Path, key_path: Path, now: dt.datetime | None = None) -> CertificateFacts:
    """The node certificate: issued by the kit's CA, valid now, matching the private key."""
    now = now or dt.datetime.now(dt.timezone.utc)
    ca, cert = _load_certificate(ca_path), _load_certificate(cert_path)
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError) as error:
        raise PreflightFailed(
            "CERTIFICATE_INVALID",
            f"{cert_path} was not issued by the CA in {ca_path} ({type(error).__name__}); "
            "the kit's files come from different federations — ask the coordinator for a fresh kit",
        ) from None
    if now < cert.not_valid_before_utc:
        raise PreflightFailed("CERTIFICATE_INVALID", f"{cert_path} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M}Z (check the clock)")
    if now > cert.not_valid_after_utc:
        raise PreflightFailed(
            "CERTIFICATE_INVALID",
            f"{cert_path} expired on {cert.not_valid_after_utc:%Y-%m-%d}; ask the coordinator for a renewed kit",
        )
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError):
        raise PreflightFailed("CERTIFICATE_INVALID", f"{key_path} is not an unencrypted PEM private key") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, public) != \
            cert.public_key().public_bytes(serialization.Encoding.DER, public):
        raise PreflightFailed("CERTIFICATE_INVALID", f"{key_path} is not the private key of {cert_path}")
    if key_path.stat().st_mode & 0o007:
        _warn(f"{key_path} is readable by every user on the host; keep it 0600 (or 0640 with a group)")
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
    except x509.ExtensionNotFound:
        dns = ()
    common_name = str(names[0].value) if names else ""
    return CertificateFacts(common_name, dns, cert.not_valid_after_utc)


# --- configs -----------------------------------------------------------------------------
def _raw_yaml(path: Path) -> dict[str, Any]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise PreflightFailed("CONFIG_INVALID", f"{path} is not valid YAML ({error})") from None
    if not isinstance(document, dict):
        raise PreflightFailed("CONFIG_INVALID", f"{path} does not hold a mapping of settings")
    return document


def _absolute(base: Path, value: Any, key: str, config: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise PreflightFailed("CONFIG_INVALID", f"{config}: {key} must be a path")
    path = Path(value)
    return path if path.is_absolute() else (base / path)


def _tls_paths(document: dict[str, Any], config: Path) -> dict[str, Path]:
    tls = document.get("tls")
    if not isinstance(tls, dict):
        raise PreflightFailed("CONFIG_INVALID", f"{config}: the tls section is missing")
    base = config.parent.resolve()
    return {key: _absolute(base, tls.get(key), f"tls.{key}", config)
            for key in ("ca_certificate", "certificate", "private_key")}


def _write_rendered(path: Path, document: dict[str, Any], validate: Callable[[Path], Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    temporary.chmod(0o600)
    try:
        validate(temporary)
    except ValueError as error:  # ConfigInvalid: the schema's own message names the field
        temporary.unlink()
        raise PreflightFailed("CONFIG_INVALID", str(error)) from None
    temporary.replace(path)


def _private_key_mode(path: Path, what: str) -> None:
    """A silo's private keys speak for the hospital: readable by the node's account only.
    Refused, not warned: a key other accounts could read has to be treated as copied."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise PreflightFailed(
            "KEY_PERMISSIONS",
            f"the {what} {path} has mode {mode:04o} (readable by other users); run `chmod 0600 {path.name}` "
            f"and `chown 10001 {path.name}` in the kit (only the silo's account may read it)",
        )


def _refuse_ca_key(kit_dir: Path, ca_certificate: Path) -> None:
    """The federation CA's private key signs every member's certificate; a silo holding it
    could mint a certificate for any other hospital. `aggregator provision` never puts it in a
    kit, so finding it there means the wrong folder was mounted: refuse before anything runs.
    Found by content (its public key is the kit CA's), not only by the name ca.key."""
    ca_public = _load_certificate(ca_certificate).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    for candidate in sorted(kit_dir.iterdir()):
        try:
            if not candidate.is_file() or candidate.stat().st_size > 65536:
                continue
            data = candidate.read_bytes()
        except OSError:
            continue
        if b"PRIVATE KEY" not in data:
            continue
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError):
            key = None  # encrypted or not a key; judged by name below
        same = key is not None and key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == ca_public
        if same or candidate.name == "ca.key":
            raise PreflightFailed(
                "CA_KEY_MOUNTED",
                f"{candidate} is the federation CA's private key; a hospital's kit must not hold it (whoever has "
                "it can issue certificates for any silo). Remove it from the mounted kit and keep it with the coordinator",
            )


def preflight_silo(config: Path, state_dir: Path, data_dir: Path, render: Path) -> str:
    from healthfed_common.startup_kit import load_silo_config

    os.umask(0o077)  # what this writes into the state volume is for the silo's account only
    kit_fix = "mount the hospital's startup kit (from `aggregator provision`) read-only at its folder"
    enrol_fix = ("the kit is not enrolled yet: run `silo-node enrol --config silo.yaml --by NAME` on the hospital's "
                 "machine, have the coordinator sign enrolment-request.json, then `silo-node enrol --config silo.yaml "
                 "--install-certificate silo.pem`")
    _readable_file(config, "silo config", kit_fix)
    document = _raw_yaml(config)
    tls = _tls_paths(document, config)
    for key, path in tls.items():
        _readable_file(path, f"kit file tls.{key}", kit_fix if key == "ca_certificate" else enrol_fix)
    signing_key = _absolute(config.parent.resolve(), document.get("signing_key", "signing.key"), "signing_key", config)
    _readable_file(signing_key, "kit file signing_key", enrol_fix)
    for what, key_path in (("TLS private key", tls["private_key"]), ("signing key", signing_key)):
        _private_key_mode(key_path, what)
    _refuse_ca_key(config.parent.resolve(), tls["ca_certificate"])
    try:
        load_silo_config(config)
    except ValueError as error:  # ConfigInvalid
        raise PreflightFailed("CONFIG_INVALID", str(error)) from None
    silo_id = str(document["silo_id"])
    facts = check_certificate(tls["ca_certificate"], tls["certificate"], tls["private_key"])
    if facts.common_name != silo_id:
        raise PreflightFailed(
            "CERTIFICATE_INVALID",
            f"the kit's certificate is for {facts.common_name!r} but silo.yaml says silo_id {silo_id!r}",
        )
    _writable_dir(state_dir, "state directory")
    identity = state_dir / "node-identity"
    if identity.exists() and identity.read_text().strip() != silo_id:
        raise PreflightFailed(
            "CONFIG_INVALID",
            f"state volume {state_dir} belongs to silo {identity.read_text().strip()!r}, not {silo_id!r}; "
            "mount this silo's own state volume",
        )
    if not identity.exists():
        # same marker `aggregator provision` puts in the kit's state folder: local commands
        # (`data add`) run before the first `run` then sign audit entries as this silo
        identity.write_text(silo_id + "\n")
    _check_data_dir(data_dir)
    rendered = dict(document)
    rendered["tls"] = {key: str(path) for key, path in tls.items()}
    rendered["signing_key"] = str(signing_key)
    rendered["state_dir"] = str(state_dir.resolve())
    if document.get("policy_file"):
        policy = _absolute(config.parent.resolve(), document["policy_file"], "policy_file", config)
        _readable_file(policy, "approval policy", "mount it with the kit or remove policy_file")
        rendered["policy_file"] = str(policy)
    _write_rendered(render, rendered, load_silo_config)
    days = (facts.expires - dt.datetime.now(dt.timezone.utc)).days
    return f"silo {silo_id}: kit ok (certificate valid {days} more days), state {state_dir}, config {render}"


def preflight_aggregator(config: Path, state_dir: Path, plan: Path | None, render: Path,
                         listen: str | None, database_url: str | None, enrolment_dir: Path | None = None) -> str:
    from aggregator.config import load_aggregator_config

    fix = "mount aggregator.yaml, ca.pem, server.pem and server.key (from `aggregator provision`) read-only"
    _readable_file(config, "aggregator config", fix)
    document = _raw_yaml(config)
    tls = _tls_paths(document, config)
    for key, path in tls.items():
        _readable_file(path, f"file tls.{key}", fix)
    try:
        load_aggregator_config(config)
    except ValueError as error:  # ConfigInvalid
        raise PreflightFailed("CONFIG_INVALID", str(error)) from None
    facts = check_certificate(tls["ca_certificate"], tls["certificate"], tls["private_key"])
    if AGGREGATOR_TLS_NAME not in facts.dns_names:
        raise PreflightFailed(
            "CERTIFICATE_INVALID", f"{tls['certificate']} does not name {AGGREGATOR_TLS_NAME!r}; silos will refuse it"
        )
    ca_key = _absolute(config.parent.resolve(), document.get("ca_private_key", "ca.key"), "ca_private_key", config)
    if ca_key.exists():
        _warn(f"the CA private key {ca_key} is mounted; `aggregator run` does not need it — keep it offline")
    needs_enrolled_cohort = False
    if plan is not None:
        _readable_file(plan, "plan", "mount the plan JSON (e.g. -v ./plan.json:/plans/plan.json:ro)")
        if not os.environ.get("HEALTHFED_OPERATOR", "").strip():  # `aggregator run` would refuse, again and again
            raise PreflightFailed(
                "OPERATOR_REQUIRED", "HEALTHFED_OPERATOR is not set: name the coordinator who starts this plan "
                "(recorded in the aggregator's audit log), e.g. HEALTHFED_OPERATOR=\"C. Lee\" docker compose up -d")
        from healthfed_common.errors import HealthFedError
        from healthfed_common.plan import parse_plan

        try:
            parsed = parse_plan(plan.read_bytes(), source=str(plan))
        except HealthFedError as error:
            raise PreflightFailed("PLAN_INVALID", str(error)) from None
        needs_enrolled_cohort = parsed.secure_aggregation.protocol != "none" and not parsed.cohort
    _writable_dir(state_dir, "state directory")
    rendered = dict(document)
    rendered["tls"] = {key: str(path) for key, path in tls.items()}
    rendered["ca_private_key"] = str(ca_key)
    rendered["state_dir"] = str(state_dir.resolve())
    # the enrolment records (`aggregator enrol`) stay beside the mounted aggregator.yaml
    enrolled = enrolment_dir.resolve() if enrolment_dir is not None else \
        _absolute(config.parent.resolve(), document.get("enrolment_dir", "enrolled"), "enrolment_dir", config)
    rendered["enrolment_dir"] = str(enrolled)
    if needs_enrolled_cohort and (not enrolled.is_dir() or not any(enrolled.glob("*.json"))):
        _warn(f"no enrolment records in {enrolled}; this secure-aggregation plan has no cohort, so it needs the "
              "enrolled/ folder `aggregator enrol` wrote (mount it beside aggregator.yaml or set HEALTHFED_ENROLMENT_DIR)")
    if listen:
        rendered["listen_address"] = listen
    if database_url:
        rendered["database_url"] = database_url
    _write_rendered(render, rendered, load_aggregator_config)
    return (f"aggregator {document.get('federation')}: certificates ok, listening on "
            f"{rendered.get('listen_address')}, state {state_dir}, config {render}")


# --- probe -------------------------------------------------------------------------------
def _process(pid_file: Path, program: str) -> str:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        raise PreflightFailed("KIT_MISSING", f"no readable pid file {pid_file}; was the node started by the entrypoint?") from None
    proc = Path("/proc") / str(pid)
    try:
        argv = [a for a in (proc / "cmdline").read_bytes().split(b"\0") if a]
        state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        raise PreflightFailed("KIT_MISSING", f"process {pid} ({program}) is not running") from None
    words = [os.path.basename(a.decode(errors="replace")) for a in argv]
    if state == "Z" or program not in words or "run" not in words:
        raise PreflightFailed("KIT_MISSING", f"process {pid} is not `{program} run` (found {' '.join(words)!r}, state {state})")
    return f"pid {pid} ({program} run)"


def _database(path: Path) -> str:
    if not path.exists():
        raise PreflightFailed("STATE_UNWRITABLE", f"database {path} does not exist yet")
    try:
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5.0)
        try:
            tables = connection.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
        finally:
            connection.close()
    except sqlite3.Error as error:
        raise PreflightFailed("STATE_UNWRITABLE", f"database {path} does not open: {error}") from None
    return f"{path.name} opens ({tables} tables)"


def probe(role: str, state_dir: Path) -> str:
    runtime = state_dir / RUNTIME_DIR
    config = runtime / f"{'silo' if role == 'silo' else 'aggregator'}.yaml"
    program = "silo-node" if role == "silo" else "aggregator"
    parts = [_process(runtime / PID_FILE, program)]
    document = _raw_yaml(config) if config.exists() else {}
    database_url = str(document.get("database_url") or "")
    if role == "silo":
        parts.append(_database(state_dir / "silo.sqlite3"))
    elif database_url and not database_url.startswith("sqlite"):
        parts.append("database is remote (not probed: the probe opens no network connection)")
    else:
        path = Path(database_url.split("sqlite:///", 1)[1]) if database_url.startswith("sqlite:///") \
            else state_dir / "aggregator.sqlite3"
        parts.append(_database(path))
    if document:
        tls = _tls_paths(document, config)
        cert = _load_certificate(tls["certificate"])
        left = cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)
        if left.total_seconds() <= 0:
            raise PreflightFailed("CERTIFICATE_INVALID", f"{tls['certificate']} has expired")
        parts.append(f"certificate valid {left.days} more days")
    return ", ".join(parts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="healthcheck.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    pre = commands.add_parser("preflight", help="check the mounts and render the effective config")
    pre.add_argument("role", choices=["silo", "aggregator"])
    pre.add_argument("--config", type=Path, required=True)
    pre.add_argument("--state-dir", type=Path, required=True)
    pre.add_argument("--render", type=Path, required=True, help="where to write the effective config")
    pre.add_argument("--data-dir", type=Path, default=Path("/data"), help="silo: the read-only exports")
    pre.add_argument("--plan", type=Path, default=None, help="aggregator: the plan JSON")
    pre.add_argument("--listen", default=None, help="aggregator: listen address inside the container")
    pre.add_argument("--database-url", default=None, help="aggregator: sqlite:///... or postgresql://...")
    pre.add_argument("--enrolment-dir", type=Path, default=None,
                     help="aggregator: the enrolment records (default: enrolment_dir of aggregator.yaml)")
    pre.add_argument("--json", action="store_true", help="print the result as one JSON object")
    pr = commands.add_parser("probe", help="liveness: process alive, state database opens, certificate valid")
    pr.add_argument("role", choices=["silo", "aggregator"])
    pr.add_argument("--state-dir", type=Path, required=True)
    pr.add_argument("--json", action="store_true", help="print the result as one JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "probe":
            summary = probe(args.role, args.state_dir)
        elif args.role == "silo":
            summary = preflight_silo(args.config, args.state_dir, args.data_dir, args.render)
        else:
            summary = preflight_aggregator(args.config, args.state_dir, args.plan, args.render,
                                           args.listen, args.database_url, args.enrolment_dir)
    except PreflightFailed as failure:
        status = EXIT_UNHEALTHY if args.command == "probe" else failure.exit_status
        if args.json:
            print(json.dumps({"ok": False, "code": failure.code, "message": str(failure)}))
        print(f"healthfed {args.command} [{failure.code}]: {failure}", file=sys.stderr)
        return status
    print(json.dumps({"ok": True, "message": summary}) if args.json else f"healthfed {args.command}: {summary}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
