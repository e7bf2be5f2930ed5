"""Bad input to enrolment, keys, the privacy ledger and the compliance tools gets its own
registered code (healthfed_common.error_codes), a message that names what and where, and
changes nothing. These are the codes no other test exercised; no TensorFlow is loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aggregator.config import AggregatorConfig, load_aggregator_config
from aggregator.enrolment import (
    CaUnavailable,
    CsrInvalid,
    EnrolmentRecordInvalid,
    EnrolmentRefused,
    enrol_silo,
    enrolled_cohort,
    record_path,
)
from aggregator.provisioning import Federation, provision_federation
from compliance.errors import LogNotFound
from compliance.node_dir import NodePaths
from healthfed_common import silo_keys
from healthfed_common.enrolment_request import EnrolmentRequest, EnrolmentRequestInvalid, read_request, sign_proof
from healthfed_common.error_codes import ErrorCode
from healthfed_common.silo_keys import SigningKeyInvalid, load_signing_key
from silo_node.privacy_ledger import InvalidCharge, PrivacyLedger
from silo_node.storage import open_silo_db


@pytest.fixture()
def federation(tmp_path: Path) -> Federation:
    return provision_federation(tmp_path / "fed", "cardio", ["alpha", "bravo"], "127.0.0.1:1")


@pytest.fixture()
def config(federation: Federation) -> AggregatorConfig:
    return load_aggregator_config(federation.aggregator_config)


def _request(silo_id: str, csr_pem: str) -> EnrolmentRequest:
    key = silo_keys.generate_signing_key()
    public = silo_keys.encode_public_key(key)
    return EnrolmentRequest(silo_id=silo_id, federation="cardio", csr_pem=csr_pem, signing_key=public,
                            signing_key_proof=sign_proof(key, silo_id, "cardio", csr_pem),
                            fingerprint=silo_keys.fingerprint(public))


def test_a_request_whose_csr_is_not_pem_is_refused_csr_invalid(config: AggregatorConfig) -> None:
    with pytest.raises(CsrInvalid) as refused:
        enrol_silo(config, _request("alpha", "-----BEGIN CERTIFICATE REQUEST-----\nnot base64\n"), by="C. Lee")
    assert refused.value.code == "CSR_INVALID"
    assert isinstance(refused.value, EnrolmentRefused) and isinstance(refused.value, PermissionError)
    assert not record_path(config, "alpha").exists()


def test_an_enrolment_request_file_that_is_not_json_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "enrolment-request.json"
    path.write_text("{ this is not json", encoding="utf-8")
    with pytest.raises(EnrolmentRequestInvalid) as refused:
        read_request(path)
    assert refused.value.code == "ENROLMENT_REQUEST_INVALID"
    assert str(path) in str(refused.value)


def test_enrolment_without_the_ca_key_is_refused_ca_key_unavailable(federation: Federation,
                                                                    config: AggregatorConfig) -> None:
    """The coordinator may keep ca.key offline: enrolment on a host without it says so."""
    config.ca_private_key.unlink()
    from tests.federation.test_enrolment import forged_request

    with pytest.raises(CaUnavailable) as refused:
        enrol_silo(config, forged_request("alpha"), by="C. Lee")
    assert refused.value.code == "CA_KEY_UNAVAILABLE"
    assert "ca.key" in str(refused.value) or str(config.ca_private_key) in str(refused.value)
    assert not record_path(config, "alpha").exists()


def test_a_damaged_enrolment_record_is_named(config: AggregatorConfig) -> None:
    config.enrolment_dir.mkdir(parents=True, exist_ok=True)
    damaged = record_path(config, "alpha")
    damaged.write_text(json.dumps({"silo_id": "alpha"})[:-3], encoding="utf-8")
    with pytest.raises(EnrolmentRecordInvalid) as refused:
        enrolled_cohort(config)
    assert refused.value.code == "ENROLMENT_RECORD_INVALID"
    assert str(damaged) in str(refused.value)


@pytest.mark.parametrize("content", [b"", b"not a key", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"])
def test_an_unreadable_signing_key_is_signing_key_invalid(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "signing.key"
    path.write_bytes(content)
    with pytest.raises(SigningKeyInvalid) as refused:
        load_signing_key(path)
    assert refused.value.code == "SIGNING_KEY_INVALID"
    assert str(path) in str(refused.value)


def test_a_nonsense_budget_is_privacy_charge_invalid_and_changes_nothing(tmp_path: Path) -> None:
    ledger = PrivacyLedger(open_silo_db(tmp_path / "silo.sqlite3"))
    for epsilon, delta in ((-1.0, 1e-5), (float("nan"), 1e-5), (1.0, 1.5)):
        with pytest.raises(InvalidCharge) as refused:
            ledger.set_budget("heart", epsilon, delta)
        assert refused.value.code == "PRIVACY_CHARGE_INVALID"
    assert not ledger.has_budget("heart")


def test_a_folder_without_an_audit_log_is_log_not_found(tmp_path: Path) -> None:
    for folder in (tmp_path / "missing", tmp_path):
        with pytest.raises(LogNotFound) as refused:
            NodePaths(folder).require_log()
        assert refused.value.code == ErrorCode.LOG_NOT_FOUND
        assert str(folder) in str(refused.value)
