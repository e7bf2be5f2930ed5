"""Enrolment: hospitals make their own keys; the coordinator certifies public keys only.

The adversary is the coordinator (and whoever sends it requests). Each test mounts one attack
on the enrolment path and checks the refusal code and that nothing was recorded or written.
No TensorFlow is loaded here."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from aggregator import pki
from aggregator.config import AggregatorConfig, load_aggregator_config
from aggregator.enrolment import (
    CohortTooSmall,
    CsrKeyUnsupported,
    CsrSignatureInvalid,
    CsrSubjectMismatch,
    FederationMismatch,
    SigningKeyChanged,
    SigningKeyInUse,
    SigningKeyProofInvalid,
    SiloNotInFederation,
    enrol_silo,
    enrolled_cohort,
    plan_with_enrolled_cohort,
    record_path,
)
from aggregator.provisioning import Federation, provision_federation
from compliance.entry import AuditEntry
from compliance.log_store import read_raw_log
from healthfed_common import silo_keys
from healthfed_common.enrolment_request import EnrolmentRequest, read_request, sign_proof
from healthfed_common.plan import parse_plan
from healthfed_common.startup_kit import SiloConfig, load_silo_config
from silo_node.enrolment import (
    CertificateMismatch,
    KeysAlreadyExist,
    build_csr,
    create_enrolment_request,
    install_certificate,
)
from tests.deploy.plans import TOY_PLAN

SILOS = ["alpha", "bravo", "charlie"]


@pytest.fixture()
def federation(tmp_path: Path) -> Federation:
    return provision_federation(tmp_path / "coordinator" / "fed", "cardio", SILOS, "127.0.0.1:1")


@pytest.fixture()
def config(federation: Federation) -> AggregatorConfig:
    return load_aggregator_config(federation.aggregator_config)


def hospital_kit(federation: Federation, silo_id: str, tmp_path: Path) -> tuple[Path, SiloConfig]:
    """The kit as the hospital received it, copied to the hospital's own machine."""
    kit = tmp_path / "hospitals" / silo_id
    shutil.copytree(federation.kits[silo_id], kit)
    return kit / "silo.yaml", load_silo_config(kit / "silo.yaml")


def hospital_request(federation: Federation, silo_id: str, tmp_path: Path) -> tuple[SiloConfig, EnrolmentRequest]:
    config_path, silo_config = hospital_kit(federation, silo_id, tmp_path)
    written = create_enrolment_request(silo_config, config_path)
    return silo_config, read_request(written.request_path)


def forged_request(silo_id: str, *, csr_name: str | None = None, federation: str = "cardio",
                   tls_key: ec.EllipticCurvePrivateKey | None = None,
                   signing_key: Ed25519PrivateKey | None = None) -> EnrolmentRequest:
    """A request built by hand (what an attacker can send), with a valid proof unless the
    caller tampers with it afterwards."""
    tls_key = tls_key or ec.generate_private_key(ec.SECP256R1())
    signing_key = signing_key or silo_keys.generate_signing_key()
    csr_pem = build_csr(tls_key, csr_name or silo_id).public_bytes(serialization.Encoding.PEM).decode()
    public = silo_keys.encode_public_key(signing_key)
    return EnrolmentRequest(silo_id=silo_id, federation=federation, csr_pem=csr_pem, signing_key=public,
                            signing_key_proof=sign_proof(signing_key, silo_id, federation, csr_pem),
                            fingerprint=silo_keys.fingerprint(public))


def audit_kinds(config: AggregatorConfig) -> list[tuple[str, str, dict]]:
    entries = [AuditEntry.from_bytes(data) for _, data in
               read_raw_log(config.state_dir / "audit" / "audit.sqlite3").entries]
    return [(e.kind, e.actor, dict(e.detail)) for e in entries]


def test_coordinator_never_writes_or_sees_a_hospital_private_key(federation: Federation, config: AggregatorConfig,
                                                                 tmp_path: Path) -> None:
    issued_dir = tmp_path / "coordinator" / "issued"
    hospital_keys: list[bytes] = []
    for silo_id in SILOS:
        silo_config, request = hospital_request(federation, silo_id, tmp_path)
        enrolment = enrol_silo(config, request, by="Coordinator C. Lee")
        issued_dir.mkdir(parents=True, exist_ok=True)
        (issued_dir / f"{silo_id}.pem").write_bytes(enrolment.certificate_pem)
        install_certificate(silo_config, issued_dir / f"{silo_id}.pem")
        tls = serialization.load_pem_private_key(silo_config.tls.private_key.read_bytes(), password=None)
        assert isinstance(tls, ec.EllipticCurvePrivateKey)
        scalar = tls.private_numbers().private_value.to_bytes(32, "big")
        signing = silo_keys.load_signing_key(silo_config.signing_key).private_bytes(
            serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
        hospital_keys += [scalar, signing]
        for secret in (scalar, signing):
            hospital_keys += [secret.hex().encode(), base64.b64encode(secret)]
    # every file the coordinator's side wrote: provisioning, enrolment records, audit log, certificates
    coordinator_files = [p for p in (tmp_path / "coordinator").rglob("*") if p.is_file()]
    own_keys = {federation.aggregator_dir / "ca.key", federation.aggregator_dir / "server.key",
                config.state_dir / "audit" / "signing.key"}  # the coordinator's own keys
    assert len(coordinator_files) > 10
    for path in coordinator_files:
        data = path.read_bytes()
        if path not in own_keys:
            assert b"PRIVATE KEY" not in data, f"{path} holds a private key"
        for secret in hospital_keys:
            assert secret not in data, f"{path} holds a hospital's private key material"
    for silo_id in SILOS:  # the skeleton kits the coordinator sends hold no key at all
        assert sorted(p.name for p in federation.kits[silo_id].iterdir()) == ["ca.pem", "silo.yaml", "state"]
    assert [m.silo_id for m in enrolled_cohort(config)] == SILOS


def test_enrolment_is_recorded_audited_with_the_person_and_the_certificate_is_for_the_csr_key(
        federation: Federation, config: AggregatorConfig, tmp_path: Path) -> None:
    silo_config, request = hospital_request(federation, "alpha", tmp_path)
    enrolment = enrol_silo(config, request, by="Coordinator C. Lee")
    record = json.loads(record_path(config, "alpha").read_text())
    assert record["signing_key"] == request.signing_key and record["fingerprint"] == request.fingerprint
    assert record["certificate_serial"] == pki.serial_hex(enrolment.certificate)
    assert record["enrolled_by"] == "person:Coordinator C. Lee" and record["enrolled_at"]
    certificate = enrolment.certificate
    csr = x509.load_pem_x509_csr(request.csr_pem.encode())
    assert certificate.public_key().public_numbers() == csr.public_key().public_numbers()
    assert certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "alpha"
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:healthfed:silo:alpha"]
    issued = [(actor, detail) for kind, actor, detail in audit_kinds(config) if kind == "certificate.issued"]
    assert ("person:Coordinator C. Lee", issued[-1][1]) == issued[-1]
    assert issued[-1][1]["signing_key_fingerprint"] == request.fingerprint


@pytest.mark.parametrize(("request_for", "refusal"), [
    (lambda: forged_request("alpha", csr_name="bravo"), CsrSubjectMismatch),      # CSR names another silo
    (lambda: forged_request("mallory"), SiloNotInFederation),                     # not in aggregator.yaml
    (lambda: forged_request("alpha", federation="oncology"), FederationMismatch),
    (lambda: forged_request("alpha", tls_key=ec.generate_private_key(ec.SECP384R1())), CsrKeyUnsupported),
])
def test_requests_that_do_not_name_a_federation_silo_correctly_are_refused(
        config: AggregatorConfig, request_for, refusal: type[Exception]) -> None:
    with pytest.raises(refusal) as refused:
        enrol_silo(config, request_for(), by="C. Lee")
    assert refused.value.code == refusal.code  # type: ignore[attr-defined]
    assert not list(config.enrolment_dir.glob("*.json"))
    assert not [k for k, _, _ in audit_kinds(config) if k == "certificate.issued"][1:]  # only the server's


def test_csr_whose_signature_was_tampered_with_is_refused(config: AggregatorConfig) -> None:
    """Someone in transit swaps the CSR's key for their own: the CSR no longer verifies."""
    honest = forged_request("alpha")
    der = bytearray(x509.load_pem_x509_csr(honest.csr_pem.encode()).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01  # inside the ECDSA signature's s value
    tampered_pem = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()
    signing = silo_keys.generate_signing_key()
    tampered = honest.model_copy(update={
        "csr_pem": tampered_pem, "signing_key": silo_keys.encode_public_key(signing),
        "signing_key_proof": sign_proof(signing, "alpha", "cardio", tampered_pem),
        "fingerprint": silo_keys.fingerprint(silo_keys.encode_public_key(signing))})
    with pytest.raises(CsrSignatureInvalid):
        enrol_silo(config, tampered, by="C. Lee")
    assert not record_path(config, "alpha").exists()


def test_signing_key_the_requester_does_not_hold_is_refused(federation: Federation, config: AggregatorConfig,
                                                           tmp_path: Path) -> None:
    """Enrolling bravo with alpha's public signing key (to make one key speak for two silos,
    or to claim alpha's messages) fails: there is no proof for it, and no reuse."""
    _, alpha = hospital_request(federation, "alpha", tmp_path)
    enrol_silo(config, alpha, by="C. Lee")
    stolen = forged_request("bravo").model_copy(update={"signing_key": alpha.signing_key,
                                                        "fingerprint": alpha.fingerprint})
    with pytest.raises(SigningKeyProofInvalid):
        enrol_silo(config, stolen, by="C. Lee")
    # even with a valid proof (alpha's own key, e.g. a colluding hospital) one key serves one silo
    alpha_key = silo_keys.load_signing_key(load_silo_config(tmp_path / "hospitals" / "alpha" / "silo.yaml").signing_key)
    with pytest.raises(SigningKeyInUse):
        enrol_silo(config, forged_request("bravo", signing_key=alpha_key), by="C. Lee")
    assert not record_path(config, "bravo").exists()


def test_reenrolling_with_another_signing_key_needs_the_flag_and_is_audited(federation: Federation,
                                                                            config: AggregatorConfig,
                                                                            tmp_path: Path) -> None:
    _, first = hospital_request(federation, "alpha", tmp_path)
    enrol_silo(config, first, by="C. Lee")
    before = record_path(config, "alpha").read_bytes()
    swapped = forged_request("alpha")  # a new key for alpha, e.g. minted by the coordinator
    with pytest.raises(SigningKeyChanged) as refused:
        enrol_silo(config, swapped, by="C. Lee")
    assert refused.value.code == "SIGNING_KEY_CHANGED" and first.fingerprint in str(refused.value)
    assert record_path(config, "alpha").read_bytes() == before
    # renewing the TLS certificate with the same signing key is fine
    renewal = forged_request("alpha", signing_key=silo_keys.load_signing_key(
        load_silo_config(tmp_path / "hospitals" / "alpha" / "silo.yaml").signing_key))
    enrol_silo(config, renewal, by="C. Lee")
    replaced = enrol_silo(config, swapped, by="C. Lee", replace_signing_key=True)
    assert replaced.replaced_fingerprint == first.fingerprint
    record = json.loads(record_path(config, "alpha").read_text())
    assert record["signing_key"] == swapped.signing_key and record["replaced_signing_keys"] == [first.signing_key]
    changes = [(actor, d) for kind, actor, d in audit_kinds(config) if kind == "configuration.changed"]
    assert changes == [("person:C. Lee", {"change": "signing key replaced", "previous_fingerprint": first.fingerprint,
                                          "fingerprint": swapped.fingerprint})]


def test_hospital_refuses_to_replace_its_keys(federation: Federation, tmp_path: Path) -> None:
    config_path, silo_config = hospital_kit(federation, "alpha", tmp_path)
    create_enrolment_request(silo_config, config_path)
    keys = {p: p.read_bytes() for p in (silo_config.tls.private_key, silo_config.signing_key)}
    for path in keys:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(KeysAlreadyExist) as refused:
        create_enrolment_request(silo_config, config_path)
    assert refused.value.code == "KEYS_EXIST"
    assert {p: p.read_bytes() for p in keys} == keys


def test_installing_a_certificate_for_another_key_silo_or_ca_is_refused(federation: Federation,
                                                                        config: AggregatorConfig,
                                                                        tmp_path: Path) -> None:
    silo_config, request = hospital_request(federation, "alpha", tmp_path)
    ca = pki.load_issued(federation.aggregator_dir / "ca.pem", federation.aggregator_dir / "ca.key")
    attempts = tmp_path / "attempts"
    attempts.mkdir()
    # a certificate for alpha, but for a key the coordinator made (it would hold the private half)
    other_key = ec.generate_private_key(ec.SECP256R1())
    foreign_key = pki.issue_silo_certificate_from_csr(ca, build_csr(other_key, "alpha"), "alpha")
    # bravo's certificate, for this kit's own key
    own_csr = x509.load_pem_x509_csr(request.csr_pem.encode())
    for_bravo = pki.issue_silo_certificate_from_csr(ca, own_csr, "bravo")
    # the right key and name, but from another CA
    other_ca = pki.create_ca("elsewhere")
    wrong_ca = pki.issue_silo_certificate_from_csr(other_ca, own_csr, "alpha")
    for name, certificate, says in [("key", foreign_key, "another key"), ("cn", for_bravo, "'bravo'"),
                                    ("ca", wrong_ca, "not issued by the federation CA")]:
        path = attempts / f"{name}.pem"
        path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
        with pytest.raises(CertificateMismatch, match=says):
            install_certificate(silo_config, path)
        assert not silo_config.tls.certificate.exists()
    (attempts / "good.pem").write_bytes(enrol_silo(config, request, by="C. Lee").certificate_pem)
    install_certificate(silo_config, attempts / "good.pem")
    assert silo_config.tls.certificate.exists()


def test_run_fills_an_empty_secure_aggregation_cohort_from_the_enrolled_silos(federation: Federation,
                                                                             config: AggregatorConfig,
                                                                             tmp_path: Path) -> None:
    plan = parse_plan(TOY_PLAN | {"secure_aggregation": {"protocol": "secagg"}, "min_silos_per_round": 2})
    said: list[str] = []
    _, alpha = hospital_request(federation, "alpha", tmp_path)
    enrol_silo(config, alpha, by="C. Lee")
    with pytest.raises(CohortTooSmall) as refused:
        plan_with_enrolled_cohort(config, plan, said.append)
    assert refused.value.code == "COHORT_TOO_SMALL"
    _, charlie = hospital_request(federation, "charlie", tmp_path)
    enrol_silo(config, charlie, by="C. Lee")
    said.clear()
    filled = plan_with_enrolled_cohort(config, plan, said.append)
    assert [(m.silo_id, m.signing_key) for m in filled.cohort] == [("alpha", alpha.signing_key),
                                                                  ("charlie", charlie.signing_key)]
    assert filled.plan_hash != plan.plan_hash
    assert any("bravo is not enrolled" in line for line in said)
    assert f"cohort: alpha signing key {alpha.fingerprint}" in said
    plain = parse_plan(TOY_PLAN)
    assert plan_with_enrolled_cohort(config, plain, said.append) is plain


def test_silo_state_is_private_to_the_silo_account(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Folders 0700 and files 0600 in the state folder: the database and its -wal/-shm, the
    audit log and its signing key, the store of the aggregator's checkpoints, the node identity
    and the de-identified dataset files,
    including files an older version left world-readable."""
    from silo_node.cli.main import main
    from silo_node.node import open_silo_node

    from tests.silo_data.exports import IDENTIFIER_POLICY, identifier_frame, write_csv

    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    (state / "leftover.log").write_text("from an older version")
    os.chmod(state / "leftover.log", 0o644)
    previous = os.umask(0o022)  # a permissive caller: the node must not depend on the umask
    try:
        node = open_silo_node(state, "alpha")
        node.close()
        export = write_csv(identifier_frame(), tmp_path / "ids.csv")
        policy = tmp_path / "policy.yaml"
        policy.write_text(yaml.safe_dump(IDENTIFIER_POLICY))
        assert main(["data", "add", "ids", str(export), "--kind", "tabular", "--policy", str(policy),
                     "--by", "IT Admin", "--state-dir", str(state)]) == 0
        assert os.umask(0o022) == 0o022  # main() left the caller's umask as it was
        node = open_silo_node(state, "alpha")
        try:  # checked while open: SQLite's -wal and -shm files exist now
            node.ledger  # noqa: B018 (the node is open; its connection holds the WAL)
            node.connection.execute("CREATE TABLE IF NOT EXISTS mode_probe (x)")
            modes = {path: (path.is_dir(), stat.S_IMODE(path.lstat().st_mode)) for path in state.rglob("*")}
        finally:
            node.close()
    finally:
        os.umask(previous)
    names = {p.name for p in modes}
    assert {"silo.sqlite3", "silo.sqlite3-wal", "silo.sqlite3-shm", "audit.sqlite3", "signing.key",
            "witness.sqlite3", "node-identity", "leftover.log"} <= names, names
    assert [p for p, (is_dir, _) in modes.items() if p.relative_to(state).parts[0] == "datasets" and not is_dir]
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    for path, (is_dir, mode) in modes.items():
        assert mode == (0o700 if is_dir else 0o600), f"{path.relative_to(state)} is {oct(mode)}"
