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


# -- the coordinator's command line and plan checks ----------------------------------------
def test_provision_refuses_to_overwrite_a_federation_and_names_bad_silo_ids(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from aggregator.cli.main import main

    out = tmp_path / "fed"
    base = ["provision", "--federation", "cardio", "--address", "127.0.0.1:50051", "--out", str(out)]
    assert main([*base, "--silos", "alpha,bravo"]) == 0
    kit = (out / "kits" / "alpha" / "silo.yaml").read_bytes()
    capsys.readouterr()
    assert main([*base, "--silos", "alpha,bravo"]) == 1
    assert "refused [FEDERATION_EXISTS]" in capsys.readouterr().err
    assert (out / "kits" / "alpha" / "silo.yaml").read_bytes() == kit  # nothing overwritten
    assert main(["provision", "--federation", "cardio", "--address", "127.0.0.1:50051",
                 "--out", str(tmp_path / "other"), "--silos", "Not A Silo Id!"]) == 1
    assert "refused [PROVISION_INVALID]" in capsys.readouterr().err


def _plan(**overrides: object) -> object:
    from healthfed_common.plan import parse_plan
    from tests.deploy.plans import TOY_PLAN

    return parse_plan(json.dumps(TOY_PLAN | overrides).encode(), source="test plan")


def test_plan_checks_name_a_bad_value_a_missing_protection_and_an_unknown_cohort_silo(tmp_path: Path) -> None:
    from aggregator.plan_check import cohort_findings, load_allow_list, privacy_findings, schema_findings
    from tests.deploy.plans import TOY_PLAN

    _, findings = schema_findings(TOY_PLAN | {"local_epochs": "many"})
    assert [(f.code, f.where) for f in findings] == [("PLAN_BAD_VALUE", "local_epochs")]

    plain = _plan()
    assert {f.code for f in privacy_findings(plain)} == {"PLAN_WITHOUT_DP", "PLAN_WITHOUT_SECURE_AGGREGATION"}
    assert privacy_findings(_plan(dp={"target_epsilon": 3.0, "target_delta": 1e-5}, secure_aggregation={
        "protocol": "secagg"}, cohort=[_member("alpha"), _member("bravo")])) == []

    stranger = _plan(cohort=[_member("alpha"), _member("mallory")])
    codes = [(f.code, f.message) for f in cohort_findings(stranger, ("alpha", "bravo"), None)]
    assert [c for c, _ in codes] == ["PLAN_COHORT_UNKNOWN_SILO"] and "'mallory'" in codes[0][1]

    unreadable = tmp_path / "policy.yaml"
    unreadable.write_bytes(b"\xff\xfe not utf-8 \x00")
    allow, problems = load_allow_list(unreadable)
    assert allow is None and [p.code for p in problems] == ["POLICY_UNREADABLE"]


def _member(silo_id: str) -> dict[str, str]:
    return {"silo_id": silo_id, "signing_key": silo_keys.encode_public_key(silo_keys.generate_signing_key())}


# -- the silo's side of the connection -----------------------------------------------------
def test_an_aggregator_refusal_without_a_code_is_logged_under_its_own_code() -> None:
    """The silo reads the code of `CODE: message` details; details without one (gRPC's own
    limits, a proxy) get AGGREGATOR_REFUSED_MESSAGE, cut to one short line."""
    import grpc

    from silo_node.connection import _refusal

    class Refused(grpc.RpcError):
        def __init__(self, details: str) -> None:
            self._details = details

        def details(self) -> str:
            return self._details

    assert _refusal(Refused("MESSAGE_TOO_LARGE: a Submit request of 9 bytes exceeds 8")).code == "MESSAGE_TOO_LARGE"
    plain = _refusal(Refused("Received message larger than max\n(4194305 vs. 4194304)" + "x" * 400))
    assert plain.code == "AGGREGATOR_REFUSED_MESSAGE"
    assert "\n" not in str(plain) and len(str(plain)) <= 300


def test_the_aggregator_warns_when_a_plan_needs_more_than_its_transport_cap(caplog: pytest.LogCaptureFixture) -> None:
    from aggregator.server import FederationService
    from aggregator.task_board import TaskBoard

    service = FederationService(TaskBoard(), None, frozenset({"alpha"}), max_message_bytes=1 << 20)  # type: ignore[arg-type]
    with caplog.at_level("ERROR", logger="healthfed.aggregator.server"):
        assert service.set_submit_limit(4 << 20) == 1 << 20
    assert "SUBMIT_LIMIT_ABOVE_CAP" in caplog.text
    caplog.clear()
    with caplog.at_level("ERROR", logger="healthfed.aggregator.server"):
        assert service.set_submit_limit(512 << 10) == 512 << 10
    assert "SUBMIT_LIMIT_ABOVE_CAP" not in caplog.text


def test_the_task_board_accepts_one_valid_answer_per_selected_silo_for_the_open_task() -> None:
    """Late, replayed, foreign, duplicate and malformed answers each get their own code and
    are not collected."""
    from aggregator.task_board import TaskBoard
    from healthfed_common.wire.messages import EvaluateResult, EvaluateTask

    board = TaskBoard()
    task = EvaluateTask("t-7", b"{}", "a" * 64, ())
    board.open(task, frozenset({"alpha", "bravo"}),
               lambda answer: None if answer.num_examples > 0 else "num_examples: expected a positive count")

    def answer(silo: str, task_id: str = "t-7", examples: int = 10) -> EvaluateResult:
        return EvaluateResult(silo, task_id, "a" * 64, examples, {"auc": 0.5})

    assert (board.submit(answer("alpha", task_id="t-6")).code) == "STALE_TASK"
    assert board.submit(answer("mallory")).code == "NOT_SELECTED"
    bad = board.submit(answer("bravo", examples=0))
    assert (bad.accepted, bad.code, bad.message) == (False, "INVALID_RESULT", "num_examples: expected a positive count")
    assert board.submit(answer("alpha")).accepted
    assert board.submit(answer("alpha", examples=99)).code == "DUPLICATE"
    assert {silo: a.num_examples for silo, a in board.close().items()} == {"alpha": 10}
