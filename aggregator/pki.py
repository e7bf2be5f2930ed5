"""The federation's own certificate authority: every connection is mutually authenticated
with certificates it issued. ECDSA P-256 throughout (what gRPC's BoringSSL accepts
everywhere); a silo certificate's CN is the silo id, the only identity a silo can act as.

The CA generates keys only for itself and the aggregator's server certificate. A hospital's
key pair is generated on the hospital's own machine (`silo-node enrol`); the CA certifies the
public key from its CSR (`issue_silo_certificate_from_csr`) and never sees the private half."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization  # noqa: F401 (re-exported for callers)
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from healthfed_common.atomic_files import write_atomically

AGGREGATOR_TLS_NAME = "healthfed-aggregator"


@dataclass(frozen=True)
class Issued:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @property
    def serial_hex(self) -> str:
        return serial_hex(self.certificate)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def create_ca(federation: str, validity_days: int = 3650) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"HealthFed CA {federation}")])
    now = _now()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=validity_days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(key, certificate)


def _leaf(
    ca: Issued,
    public_key: ec.EllipticCurvePublicKey,
    common_name: str,
    usage: x509.ObjectIdentifier,
    san: list[x509.GeneralName],
    not_before: dt.datetime | None,
    not_after: dt.datetime | None,
    validity_days: int,
) -> x509.Certificate:
    """A certificate for `public_key`, signed by the CA. It takes the public half only: the
    CA never needs (and for a hospital never sees) the private key it certifies."""
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.certificate.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or now - dt.timedelta(minutes=5))
        .not_valid_after(not_after or now + dt.timedelta(days=validity_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
    )
    return builder.sign(ca.key, hashes.SHA256())


def issue_server_certificate(ca: Issued, hosts: list[str], validity_days: int = 825) -> Issued:
    """The aggregator's own TLS key and certificate (the coordinator's key: made here)."""
    names: list[x509.GeneralName] = [x509.DNSName(AGGREGATOR_TLS_NAME), x509.DNSName("localhost")]
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    unique = list(dict.fromkeys(names))
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = _leaf(ca, key.public_key(), AGGREGATOR_TLS_NAME, ExtendedKeyUsageOID.SERVER_AUTH, unique,
                        None, None, validity_days)
    return Issued(key, certificate)


def silo_uri(silo_id: str) -> str:
    """The SAN every silo certificate (and the hospital's CSR) carries."""
    return f"urn:healthfed:silo:{silo_id}"


def issue_silo_certificate_from_csr(
    ca: Issued,
    csr: x509.CertificateSigningRequest,
    silo_id: str,
    *,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    validity_days: int = 365,
) -> x509.Certificate:
    """A client certificate for the public key in a hospital's CSR (the hospital generated
    the key pair on its own machine). The subject and extensions are the CA's choice, not
    the CSR's: CN and SAN name `silo_id`, client-auth only. Callers check the CSR first
    (`aggregator.enrolment`); this refuses only a key type gRPC would not accept."""
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(public_key.curve, ec.SECP256R1):
        raise ValueError("silo certificates are issued for EC P-256 keys only")
    san: list[x509.GeneralName] = [x509.UniformResourceIdentifier(silo_uri(silo_id))]
    return _leaf(ca, public_key, silo_id, ExtendedKeyUsageOID.CLIENT_AUTH, san, not_before, not_after,
                 validity_days)


def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def write_certificate(path: Path, certificate: x509.Certificate) -> None:
    """Atomically (temporary file + rename): a crash never leaves half a certificate."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, certificate.public_bytes(serialization.Encoding.PEM))


def load_issued(cert_path: Path, key_path: Path) -> Issued:
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path}: expected an EC private key")
    return Issued(key, certificate)


def serial_hex(certificate: x509.Certificate) -> str:
    return format(certificate.serial_number, "x")


def certificate_serial_hex(pem: bytes) -> str:
    return serial_hex(x509.load_pem_x509_certificate(pem))
