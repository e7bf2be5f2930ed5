"""Enrolment on the hospital's own machine: the keys are born here and never leave.

`create_enrolment_request` generates the TLS key (EC P-256, what gRPC's BoringSSL accepts),
a CSR signed with it, and the long-term Ed25519 signing key, writes both keys 0600 into the
kit and an `enrolment-request.json` holding only public material. The coordinator's CA signs
the CSR; `install_certificate` checks that what came back certifies this kit's key for this
silo before it becomes `silo.pem`. Why: the coordinator is the party hospitals guard
against; a key it generated is a key it can use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from healthfed_common import silo_keys
from healthfed_common.atomic_files import write_atomically
from healthfed_common.enrolment_request import REQUEST_FILE, EnrolmentRequest, sign_proof, write_request
from silo_node.errors import SiloNodeError
from healthfed_common.startup_kit import SiloConfig


class EnrolmentError(SiloNodeError):
    """Root of the silo's enrolment refusals."""

    code = "ENROLMENT_ERROR"


class KeysAlreadyExist(EnrolmentError, FileExistsError):
    code = "KEYS_EXIST"


class CertificateMismatch(EnrolmentError, ValueError):
    code = "CERTIFICATE_MISMATCH"


class CertificateUnreadable(EnrolmentError, ValueError):
    code = "CERTIFICATE_INVALID"


def silo_uri(silo_id: str) -> str:
    return f"urn:healthfed:silo:{silo_id}"


@dataclass(frozen=True)
class EnrolmentRequestWritten:
    request_path: Path
    tls_key_path: Path
    signing_key_path: Path
    fingerprint: str


def _write_new_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Created with O_EXCL and mode 0600: never replaces a key, never readable by others."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def build_csr(key: ec.EllipticCurvePrivateKey, silo_id: str) -> x509.CertificateSigningRequest:
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, silo_id)]))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(silo_uri(silo_id))]),
                       critical=False)
        .sign(key, hashes.SHA256())
    )


def request_path(config_path: Path) -> Path:
    return config_path.parent / REQUEST_FILE


def create_enrolment_request(config: SiloConfig, config_path: Path) -> EnrolmentRequestWritten:
    """Generates both keys and the request; refuses (KEYS_EXIST) when either key or the
    request is already there, so a second run can never replace keys a certificate or a
    plan's cohort already pins."""
    tls_key_path, signing_key_path = config.tls.private_key, config.signing_key
    out = request_path(config_path)
    existing = [p for p in (tls_key_path, signing_key_path, out) if p.exists()]
    if existing:
        raise KeysAlreadyExist(
            f"{', '.join(map(str, existing))} already exist(s); this kit was enrolled before. "
            "Keys are never replaced silently: to start over, move the old keys, request and silo.pem away first")
    tls_key = ec.generate_private_key(ec.SECP256R1())
    signing_key = silo_keys.generate_signing_key()
    csr_pem = build_csr(tls_key, config.silo_id).public_bytes(serialization.Encoding.PEM).decode("ascii")
    public = silo_keys.encode_public_key(signing_key)
    request = EnrolmentRequest(
        silo_id=config.silo_id, federation=config.federation, csr_pem=csr_pem, signing_key=public,
        signing_key_proof=sign_proof(signing_key, config.silo_id, config.federation, csr_pem),
        fingerprint=silo_keys.fingerprint(public),
    )
    _write_new_private_key(tls_key_path, tls_key)
    silo_keys.write_signing_key(signing_key_path, signing_key)
    write_request(out, request)
    return EnrolmentRequestWritten(out, tls_key_path, signing_key_path, request.fingerprint)


def install_certificate(config: SiloConfig, certificate_file: Path) -> x509.Certificate:
    """Checks that the certificate certifies this kit's own key, for this silo, from the
    kit's CA, then writes it atomically to the kit's certificate path."""
    try:
        pem = certificate_file.read_bytes()
        certificate = x509.load_pem_x509_certificate(pem)
    except FileNotFoundError:
        raise CertificateUnreadable(f"{certificate_file}: file not found") from None
    except ValueError:
        raise CertificateUnreadable(f"{certificate_file}: not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(config.tls.private_key.read_bytes(), password=None)
    except FileNotFoundError:
        raise CertificateMismatch(
            f"{config.tls.private_key} does not exist: run `silo-node enrol` on this kit first") from None
    except (ValueError, TypeError):
        raise CertificateUnreadable(f"{config.tls.private_key}: not a PEM private key") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if certificate.public_key().public_bytes(serialization.Encoding.DER, public) != \
            key.public_key().public_bytes(serialization.Encoding.DER, public):
        raise CertificateMismatch(
            f"{certificate_file} certifies another key than this kit's {config.tls.private_key.name}; "
            "ask the coordinator to sign this kit's enrolment request")
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(names[0].value) if names else ""
    if common_name != config.silo_id:
        raise CertificateMismatch(
            f"{certificate_file} is issued to {common_name!r}, but this kit is silo {config.silo_id!r}")
    _check_issuer(config, certificate, certificate_file)
    write_atomically(config.tls.certificate, certificate.public_bytes(serialization.Encoding.PEM))
    return certificate


def _check_issuer(config: SiloConfig, certificate: x509.Certificate, certificate_file: Path) -> None:
    """The certificate must chain to the kit's CA, or every connection would fail later."""
    try:
        ca = x509.load_pem_x509_certificate(config.tls.ca_certificate.read_bytes())
    except (FileNotFoundError, ValueError):
        raise CertificateUnreadable(f"{config.tls.ca_certificate}: the kit's CA certificate is missing or not PEM") from None
    try:
        certificate.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        raise CertificateMismatch(
            f"{certificate_file} was not issued by the federation CA in {config.tls.ca_certificate}") from None


def record_in_audit_log(config: SiloConfig, actor: str, change: str, **detail: str) -> bool:
    """Appends a `configuration.changed` event to the silo's own audit log when its state
    folder already knows the silo (the kit's state/node-identity); False when it does not.
    Opens the log directly (same layout as silo_node.node) so enrolling loads no data layer."""
    from compliance.audit_log import AuditLog

    marker = config.state_dir / "node-identity"
    if not marker.is_file() or marker.read_text().strip() != config.silo_id:
        return False
    audit = config.state_dir / "audit"
    log = AuditLog.open(audit / "audit.sqlite3", audit / "signing.key", origin=f"silo:{config.silo_id}")
    try:
        log.record("configuration.changed", actor=actor, detail={"change": change, **detail})
    finally:
        log.close()
    return True
