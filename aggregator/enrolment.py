"""The coordinator's half of enrolment: check a hospital's request, certify the public key in
its CSR, and remember its signing key.

Why it looks like this: the coordinator is the party hospitals guard against, so it never
generates or sees a hospital's private key. It learns two public keys per hospital: the TLS
key in the CSR (which its CA certifies for mutual TLS) and the Ed25519 signing key (which
`aggregator run` pins in a secure-aggregation plan's cohort, where each hospital's data
steward checks its fingerprint). A hospital's signing key is replaced only when a person says
so (`--replace-signing-key`), and that is audited: a silent swap would let the coordinator
speak for a hospital in secure aggregation.

Records live in `enrolment_dir` (default `enrolled/` next to aggregator.yaml), one JSON file
per silo, written atomically under a lock.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aggregator import pki
from aggregator.audit import AggregatorAudit
from aggregator.config import AggregatorConfig
from healthfed_common import actors, silo_keys
from healthfed_common.atomic_files import exclusive_lock, write_atomically
from healthfed_common.enrolment_request import EnrolmentRequest, decode_proof
from aggregator.errors import AggregatorError
from healthfed_common.plan import CohortMember, Plan, parse_plan

RECORD_VERSION = 1


class EnrolmentRefused(AggregatorError, PermissionError):
    """Root of the coordinator's enrolment refusals; each leaf has its own code."""

    code = "ENROLMENT_REFUSED"


class FederationMismatch(EnrolmentRefused):
    code = "FEDERATION_MISMATCH"


class SiloNotInFederation(EnrolmentRefused):
    code = "SILO_NOT_IN_FEDERATION"


class CsrInvalid(EnrolmentRefused):
    code = "CSR_INVALID"


class CsrSignatureInvalid(EnrolmentRefused):
    code = "CSR_SIGNATURE_INVALID"


class CsrSubjectMismatch(EnrolmentRefused):
    code = "CSR_SUBJECT_MISMATCH"


class CsrKeyUnsupported(EnrolmentRefused):
    code = "CSR_KEY_UNSUPPORTED"


class SigningKeyProofInvalid(EnrolmentRefused):
    code = "SIGNING_KEY_PROOF_INVALID"


class FingerprintMismatch(EnrolmentRefused):
    code = "FINGERPRINT_MISMATCH"


class SigningKeyChanged(EnrolmentRefused):
    code = "SIGNING_KEY_CHANGED"


class SigningKeyInUse(EnrolmentRefused):
    code = "SIGNING_KEY_IN_USE"


class EnrolmentRecordInvalid(AggregatorError, ValueError):
    code = "ENROLMENT_RECORD_INVALID"


class CaUnavailable(AggregatorError, FileNotFoundError):
    code = "CA_KEY_UNAVAILABLE"


class EnrolmentRecord(BaseModel):
    """What the coordinator remembers of one hospital (public material only)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    version: int = RECORD_VERSION
    silo_id: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]{1,62}$")
    federation: str
    signing_key: str = Field(min_length=44, max_length=44)
    fingerprint: str
    certificate_serial: str
    certificate_pem: str
    not_after: str
    enrolled_at: str
    enrolled_by: str
    replaced_signing_keys: tuple[str, ...] = ()

    def cohort_member(self) -> CohortMember:
        return CohortMember(silo_id=self.silo_id, signing_key=self.signing_key)


@dataclass(frozen=True)
class Enrolment:
    record: EnrolmentRecord
    certificate: x509.Certificate
    replaced_fingerprint: str | None

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)


def record_path(config: AggregatorConfig, silo_id: str) -> Path:
    return config.enrolment_dir / f"{silo_id}.json"


def read_record(path: Path, silo_id: str | None = None) -> EnrolmentRecord:
    try:
        record = EnrolmentRecord.model_validate(json.loads(path.read_bytes()))
    except FileNotFoundError:
        raise EnrolmentRecordInvalid(f"{path}: no enrolment record") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise EnrolmentRecordInvalid(f"{path}: not JSON") from None
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise EnrolmentRecordInvalid(f"{path}: {problems}") from None
    expected = silo_id or path.stem
    if record.silo_id != expected:
        raise EnrolmentRecordInvalid(f"{path}: the record is for {record.silo_id!r}, not {expected!r}")
    try:
        silo_keys.decode_public_key(record.signing_key)
    except silo_keys.SigningKeyInvalid as error:
        raise EnrolmentRecordInvalid(f"{path}: {error}") from None
    return record


def enrolment_record(config: AggregatorConfig, silo_id: str) -> EnrolmentRecord | None:
    path = record_path(config, silo_id)
    return read_record(path, silo_id) if path.exists() else None


def enrolled_cohort(config: AggregatorConfig) -> tuple[CohortMember, ...]:
    """The enrolled silos of `config.silos`, each with its signing key, sorted by silo id.
    A silo listed in the config without a record is left out (the caller says so)."""
    members = []
    for silo_id in sorted(set(config.silos)):
        record = enrolment_record(config, silo_id)
        if record is None:
            continue
        if record.federation != config.federation:
            raise EnrolmentRecordInvalid(
                f"{record_path(config, silo_id)}: enrolled in federation {record.federation!r}, "
                f"not {config.federation!r}")
        members.append(record.cohort_member())
    return tuple(members)


def _common_name(csr: x509.CertificateSigningRequest) -> str | None:
    names = csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if len(names) == 1 else None


def check_request(config: AggregatorConfig, request: EnrolmentRequest) -> x509.CertificateSigningRequest:
    """Every check that needs no state: who asks, whether the CSR proves possession of its
    key, names the silo and uses a key gRPC accepts, and whether the requester holds the
    signing key it asks us to pin."""
    if request.federation != config.federation:
        raise FederationMismatch(
            f"the request is for federation {request.federation!r}; this aggregator runs {config.federation!r}")
    if request.silo_id not in config.silos:
        raise SiloNotInFederation(
            f"silo {request.silo_id!r} is not in this federation's silos ({', '.join(config.silos)}); "
            "add it to aggregator.yaml first if it should join")
    try:
        csr = x509.load_pem_x509_csr(request.csr_pem.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        raise CsrInvalid("csr_pem is not a PEM certificate signing request") from None
    if not csr.is_signature_valid:
        raise CsrSignatureInvalid(
            "the CSR's signature does not verify under the key it carries (altered in transit, or not made "
            "by the holder of that key)")
    common_name = _common_name(csr)
    if common_name != request.silo_id:
        raise CsrSubjectMismatch(f"the CSR names {common_name!r}, but the request is for silo {request.silo_id!r}")
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(public_key.curve, ec.SECP256R1):
        raise CsrKeyUnsupported("the CSR's key must be EC P-256 (what every gRPC TLS stack accepts)")
    raw = silo_keys.decode_public_key(request.signing_key)
    if not silo_keys.verify_signature(raw, request.proof_message(), decode_proof(request)):
        raise SigningKeyProofInvalid(
            "signing_key_proof does not verify: the requester did not show it holds this signing key")
    if request.fingerprint != silo_keys.fingerprint(raw):
        raise FingerprintMismatch(
            f"the request states fingerprint {request.fingerprint!r}, but its signing key's is "
            f"{silo_keys.fingerprint(raw)!r}")
    return csr


def _load_ca(config: AggregatorConfig) -> pki.Issued:
    if not config.ca_private_key.exists():
        raise CaUnavailable(
            f"the CA key {config.ca_private_key} is not here; run `aggregator enrol` where ca.key is kept")
    return pki.load_issued(config.tls.ca_certificate, config.ca_private_key)


def enrol_silo(
    config: AggregatorConfig,
    request: EnrolmentRequest,
    *,
    by: str,
    replace_signing_key: bool = False,
    validity_days: int = 365,
) -> Enrolment:
    """Checks the request, issues the certificate, records the enrolment durably and audits
    it (`certificate.issued`, actor `person:<by>`). Nothing is written when a check fails."""
    actor = actors.person(by)
    csr = check_request(config, request)
    with exclusive_lock(config.enrolment_dir / ".lock"):  # one enrolment at a time: no two pass the duplicate-key check
        previous = enrolment_record(config, request.silo_id)
        replaced: str | None = None
        history: tuple[str, ...] = ()
        if previous is not None:
            history = previous.replaced_signing_keys
            if previous.signing_key != request.signing_key:
                if not replace_signing_key:
                    raise SigningKeyChanged(
                        f"silo {request.silo_id!r} is enrolled with signing key {previous.fingerprint}; this request "
                        f"brings another ({request.fingerprint}). Confirm the change with the hospital out of band, "
                        "then pass --replace-signing-key")
                replaced = previous.fingerprint
                history = (*history, previous.signing_key)
        for other in config.silos:
            if other == request.silo_id:
                continue
            record = enrolment_record(config, other)
            if record is not None and record.signing_key == request.signing_key:
                raise SigningKeyInUse(f"this signing key is already enrolled for silo {other!r}")
        certificate = pki.issue_silo_certificate_from_csr(
            _load_ca(config), csr, request.silo_id, validity_days=validity_days)
        record = EnrolmentRecord(
            silo_id=request.silo_id, federation=config.federation, signing_key=request.signing_key,
            fingerprint=request.fingerprint, certificate_serial=pki.serial_hex(certificate),
            certificate_pem=certificate.public_bytes(serialization.Encoding.PEM).decode("ascii"),
            not_after=certificate.not_valid_after_utc.isoformat(),
            enrolled_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            enrolled_by=actor, replaced_signing_keys=history,
        )
        write_atomically(record_path(config, request.silo_id), json.dumps(record.model_dump(), indent=2) + "\n")
    audit = AggregatorAudit(config.state_dir)
    try:
        if replaced is not None:
            audit.record("configuration.changed", actor=actor, entities={"silo": request.silo_id},
                         detail={"change": "signing key replaced", "previous_fingerprint": replaced,
                                 "fingerprint": record.fingerprint})
        audit.record("certificate.issued", actor=actor,
                     entities={"subject": request.silo_id, "serial": record.certificate_serial},
                     detail={"not_after": record.not_after, "signing_key_fingerprint": record.fingerprint,
                             "enrolment": "csr"})
    finally:
        audit.close()
    return Enrolment(record, certificate, replaced)


class CohortTooSmall(AggregatorError, ValueError):
    code = "COHORT_TOO_SMALL"


def plan_with_enrolled_cohort(config: AggregatorConfig, plan: Plan, say: Callable[[str], None]) -> Plan:
    """A secure-aggregation plan without a cohort gets the enrolled silos, each pinned to the
    signing key it enrolled with (validated again, so the plan's cohort/threshold rules run).
    Other plans are returned unchanged. Says who is in and who is left out and why."""
    if plan.secure_aggregation.protocol == "none" or plan.cohort:
        return plan
    cohort = enrolled_cohort(config)
    enrolled = {member.silo_id for member in cohort}
    for silo_id in sorted(set(config.silos) - enrolled):
        say(f"cohort: {silo_id} is not enrolled (no {record_path(config, silo_id).name} in "
            f"{config.enrolment_dir}); left out of this plan")
    if len(cohort) < 2:
        raise CohortTooSmall(
            f"secure aggregation needs at least 2 enrolled silos; {len(cohort)} of {len(config.silos)} are enrolled "
            "(enrol hospitals with `aggregator enrol`)")
    for member in cohort:
        say(f"cohort: {member.silo_id} signing key {member.fingerprint}")
    return parse_plan(plan.model_copy(update={"cohort": cohort}).model_dump(), source="plan with enrolled cohort")
