"""`enrolment-request.json`: what a hospital sends the coordinator to join a federation.

The hospital writes it (`silo-node enrol`) and the coordinator reads it (`aggregator enrol`),
so the schema lives in the shared package. It carries only public material: a CSR for the
TLS key the hospital generated, and the public half of its Ed25519 signing key with a proof
that the hospital holds the private half (`signing_key_proof`). The proof binds the signing key
to this silo id, federation and CSR, so nobody can enrol a key they do not hold (e.g. another
hospital's, to make two cohort entries share one key).
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from healthfed_common.errors import HealthFedError

REQUEST_VERSION = 1
REQUEST_FILE = "enrolment-request.json"
_PROOF_DOMAIN = b"healthfed-enrolment-request-v1\x00"


class EnrolmentRequestInvalid(HealthFedError, ValueError):
    """An enrolment request file cannot be read or does not satisfy the schema."""

    code = "ENROLMENT_REQUEST_INVALID"


class EnrolmentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    version: int = Field(default=REQUEST_VERSION, description="Format version; others are refused.")
    silo_id: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]{1,62}$", description="The silo id from the kit's silo.yaml.")
    federation: str = Field(min_length=1, description="The federation named in the kit.")
    csr_pem: str = Field(min_length=1, max_length=16_384, description="PKCS#10 CSR (PEM) signed with the TLS key.")
    signing_key: str = Field(min_length=44, max_length=44, description="base64 Ed25519 public key.")
    signing_key_proof: str = Field(min_length=88, max_length=88,
                                   description="base64 Ed25519 signature of proof_message() under signing_key.")
    fingerprint: str = Field(description="fingerprint(signing_key), for people to compare out of band.")

    def proof_message(self) -> bytes:
        return proof_message(self.silo_id, self.federation, self.csr_pem)


def proof_message(silo_id: str, federation: str, csr_pem: str) -> bytes:
    """Domain-separated, length-prefixed: no two (silo, federation, CSR) share a message."""
    parts = [silo_id.encode(), federation.encode(), csr_pem.encode()]
    return _PROOF_DOMAIN + b"".join(len(p).to_bytes(4, "big") + p for p in parts)


def sign_proof(key: Ed25519PrivateKey, silo_id: str, federation: str, csr_pem: str) -> str:
    return base64.b64encode(key.sign(proof_message(silo_id, federation, csr_pem))).decode("ascii")


def decode_proof(request: EnrolmentRequest) -> bytes:
    try:
        return base64.b64decode(request.signing_key_proof.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise EnrolmentRequestInvalid("signing_key_proof is not valid base64") from None


def write_request(path: Path, request: EnrolmentRequest) -> None:
    """Created exclusively (never overwrites a request already sent)."""
    with path.open("x", encoding="utf-8") as handle:
        handle.write(json.dumps(request.model_dump(), indent=2) + "\n")


def read_request(path: Path) -> EnrolmentRequest:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise EnrolmentRequestInvalid(f"{path}: file not found") from None
    except OSError as error:
        raise EnrolmentRequestInvalid(f"{path}: cannot be read ({error.strerror})") from None
    if len(raw) > 64_000:
        raise EnrolmentRequestInvalid(f"{path}: {len(raw)} bytes is too large for an enrolment request")
    try:
        document = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise EnrolmentRequestInvalid(f"{path}: not JSON") from None
    if isinstance(document, dict) and document.get("version", REQUEST_VERSION) != REQUEST_VERSION:
        raise EnrolmentRequestInvalid(
            f"{path}: request format version {document.get('version')!r}; this build reads {REQUEST_VERSION}")
    try:
        return EnrolmentRequest.model_validate(document)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'request'}: {e['msg']}" for e in error.errors())
        raise EnrolmentRequestInvalid(f"{path}: {problems}") from None
