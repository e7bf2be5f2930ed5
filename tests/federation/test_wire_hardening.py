"""Cheap refusals (issue 11 item 7), over real gRPC with mutual TLS on loopback.

The aggregator authenticates the caller from the TLS handshake before it looks at a byte of
the request, checks the request size against the method's limit before decoding, answers
malformed bytes with INVALID_ARGUMENT and a `WIRE_FORMAT:` detail written by us, and binds
every secure-aggregation sender to the certificate. The silo decodes the aggregator's
responses within a bound and turns malformed ones into a coded log line, never a crash.

Decoding is observed by wrapping the real `codec.decode` with a counter (the server under
test is the real one); a refusal "before decoding" means the counter did not move.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import time
import typing
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aggregator import pki
from aggregator.config import load_aggregator_config
from aggregator.limits import element_count, limit_for_elements, submit_limit_bytes
from aggregator.provisioning import provision_federation
from aggregator.server import POLL_LIMIT_BYTES, FederationService, start_server
from aggregator.state_store import StateStore
from aggregator.task_board import TaskBoard
from healthfed_common.secagg import (
    ConsistencySignature,
    EncryptedShare,
    KeyAdvertisement,
    MaskedInput,
    UnmaskResponse,
)
from healthfed_common.startup_kit import SiloConfig, TLSFiles
from healthfed_common.wire import codec
from healthfed_common.wire.messages import (
    PROTOCOL_VERSION,
    Ack,
    AggregatorCheckpoint,
    AuditCheckpoint,
    PollRequest,
    SecAggPhaseTask,
    SecAggReply,
    SharesBundle,
    TrainResult,
    Wait,
)
from healthfed_common.wire.service import POLL_METHOD, SERVICE_NAME, SUBMIT_METHOD
from pipelines.local_federation import free_port
from silo_node import connection as silo_connection
from silo_node.connection import AggregatorConnection
from tests.core.test_wire_codec import HOSTILE

_PYTHON_TEXT = ("Expecting", "line 1 column", "codec can't decode", "unpack", "Traceback", "Error")
SESSION = b"s" * 32


@dataclass(frozen=True)
class Credentials:
    ca: bytes
    cert: bytes
    key: bytes


def _issue(aggregator_dir: Path, common_name: str) -> Credentials:
    """A client certificate from the federation's own CA, made here so the test does not
    depend on how kits are completed (provisioning or enrolment)."""
    ca_pem = (aggregator_dir / "ca.pem").read_bytes()
    ca_cert = x509.load_pem_x509_certificate(ca_pem)
    ca_key = serialization.load_pem_private_key((aggregator_dir / "ca.key").read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(
            [x509.UniformResourceIdentifier(f"urn:healthfed:silo:{common_name}")]), critical=False)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    return Credentials(
        ca_pem,
        certificate.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                          serialization.NoEncryption()),
    )


@dataclass
class DecodeCounter:
    """Counts calls of the real codec.decode (and still decodes)."""

    calls: int = 0
    real: Callable[..., Any] = codec.decode

    def __call__(self, data: bytes, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.real(data, *args, **kwargs)


@dataclass
class Federation:
    aggregator_dir: Path
    port: int
    store: StateStore
    board: TaskBoard
    service: FederationService
    refused: list[tuple[str, str]]
    decodes: DecodeCounter
    silos: dict[str, Credentials] = field(default_factory=dict)

    def call(self, silo: str | Credentials, method: str, payload: bytes) -> bytes:
        creds = self.silos[silo] if isinstance(silo, str) else silo
        channel_credentials = grpc.ssl_channel_credentials(creds.ca, creds.key, creds.cert)
        with grpc.secure_channel(
            f"127.0.0.1:{self.port}", channel_credentials,
            options=[("grpc.ssl_target_name_override", pki.AGGREGATOR_TLS_NAME),
                     ("grpc.max_send_message_length", 256 * 1024 * 1024)],
        ) as channel:
            return channel.unary_unary(f"/{SERVICE_NAME}/{method}")(payload, timeout=10)

    def refusal(self, silo: str | Credentials, method: str, payload: bytes) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as caught:
            self.call(silo, method, payload)
        return caught.value


def _start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, witness: Any = None,
           **config_changes: Any) -> Iterator[Federation]:
    port = free_port()
    fed = provision_federation(tmp_path / "fed", "wire-test", ["alpha", "bravo"], f"127.0.0.1:{port}")
    config = load_aggregator_config(fed.aggregator_config).model_copy(update=config_changes)
    store = StateStore(config.state_dir / "aggregator.sqlite3")
    refused: list[tuple[str, str]] = []
    board = TaskBoard()
    service = FederationService(board, store, frozenset(config.silos),
                                on_refused_connection=lambda who, code, _m: refused.append((who, code)),
                                witness=witness)
    decodes = DecodeCounter()
    monkeypatch.setattr(codec, "decode", decodes)
    server, bound = start_server(config, service)
    federation = Federation(fed.aggregator_dir, bound, store, board, service, refused, decodes)
    federation.silos = {s: _issue(fed.aggregator_dir, s) for s in ("alpha", "bravo", "charlie")}
    try:
        yield federation
    finally:
        server.stop(0).wait()
        store.close()


@pytest.fixture()
def federation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Federation]:
    yield from _start(tmp_path, monkeypatch)


def _assert_coded(error: grpc.RpcError, status: grpc.StatusCode, code: str) -> None:
    details = error.details() or ""
    assert error.code() == status, (error.code(), details)
    assert details.startswith(f"{code}: "), details
    assert not any(fragment in details for fragment in _PYTHON_TEXT), details


# -- authentication first -----------------------------------------------------------------------

def test_an_enrolled_silo_is_served_and_its_poll_decoded(federation: Federation) -> None:
    reply = federation.call("alpha", POLL_METHOD, codec.encode(PollRequest("alpha", "test")))
    assert isinstance(codec.decode(reply), Wait)
    assert federation.decodes.calls == 2  # the server's decode of the poll, and ours of the reply


@pytest.mark.parametrize("method", [POLL_METHOD, SUBMIT_METHOD])
def test_garbage_from_a_revoked_certificate_is_refused_before_decoding(federation: Federation, method: str) -> None:
    alpha = federation.silos["alpha"]
    federation.store.revoke(pki.certificate_serial_hex(alpha.cert), "alpha", "laptop stolen")
    error = federation.refusal("alpha", method, b"\xff" * 1000)
    _assert_coded(error, grpc.StatusCode.PERMISSION_DENIED, "CERTIFICATE_REVOKED")
    assert federation.decodes.calls == 0, "nothing from a revoked certificate is decoded"
    assert ("alpha", "CERTIFICATE_REVOKED") in federation.refused


@pytest.mark.parametrize("method", [POLL_METHOD, SUBMIT_METHOD])
def test_garbage_from_a_silo_not_enrolled_is_refused_before_decoding(federation: Federation, method: str) -> None:
    # a huge hostile envelope: were it decoded, it would be refused as WIRE_FORMAT, not NOT_ENROLLED
    error = federation.refusal("charlie", method, HOSTILE["deep nesting (parser)"][0])
    _assert_coded(error, grpc.StatusCode.PERMISSION_DENIED, "NOT_ENROLLED")
    assert federation.decodes.calls == 0
    assert ("charlie", "NOT_ENROLLED") in federation.refused


def test_a_claim_of_another_silo_is_refused_after_decoding(federation: Federation) -> None:
    error = federation.refusal("alpha", POLL_METHOD, codec.encode(PollRequest("bravo", "test")))
    _assert_coded(error, grpc.StatusCode.PERMISSION_DENIED, "IDENTITY_MISMATCH")
    assert ("alpha", "IDENTITY_MISMATCH") in federation.refused


# -- size before decoding -----------------------------------------------------------------------

def test_an_oversized_poll_is_refused_before_decoding(federation: Federation) -> None:
    error = federation.refusal("alpha", POLL_METHOD, b"HFED" + b"\0" * POLL_LIMIT_BYTES)
    _assert_coded(error, grpc.StatusCode.RESOURCE_EXHAUSTED, "MESSAGE_TOO_LARGE")
    assert federation.decodes.calls == 0
    assert ("alpha", "MESSAGE_TOO_LARGE") in federation.refused


def test_a_submit_over_the_plans_limit_is_refused_before_decoding(federation: Federation) -> None:
    federation.service.set_submit_limit(64 * 1024)
    error = federation.refusal("alpha", SUBMIT_METHOD, b"\xff" * (64 * 1024 + 1))
    _assert_coded(error, grpc.StatusCode.RESOURCE_EXHAUSTED, "MESSAGE_TOO_LARGE")
    assert federation.decodes.calls == 0
    # at the limit the request is decoded (and this one is refused for what it is)
    error = federation.refusal("alpha", SUBMIT_METHOD, b"\xff" * (64 * 1024))
    _assert_coded(error, grpc.StatusCode.INVALID_ARGUMENT, "WIRE_FORMAT")
    assert federation.decodes.calls == 1


def test_the_plan_limit_never_exceeds_the_transport_cap(federation: Federation) -> None:
    assert federation.service.set_submit_limit(10 * federation.service.hard_cap_bytes) == \
        federation.service.hard_cap_bytes


def test_grpc_refuses_a_request_over_the_configured_cap_before_any_handler(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for federation in _start(tmp_path, monkeypatch, max_message_bytes=256 * 1024):
        assert federation.service.hard_cap_bytes == 256 * 1024
        error = federation.refusal("charlie", SUBMIT_METHOD, b"\0" * (300 * 1024))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert federation.decodes.calls == 0 and federation.refused == [], "no handler ran"


# -- malformed bytes from an authenticated silo -------------------------------------------------

@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_envelopes_get_invalid_argument_with_a_wire_format_code(federation: Federation, name: str) -> None:
    error = federation.refusal("alpha", SUBMIT_METHOD, HOSTILE[name][0])
    _assert_coded(error, grpc.StatusCode.INVALID_ARGUMENT, "WIRE_FORMAT")
    assert ("alpha", "WIRE_FORMAT") in federation.refused
    assert "EvilTask1" not in (error.details() or "")


def test_another_protocol_version_is_refused_with_its_own_code(federation: Federation) -> None:
    data = bytearray(codec.encode(PollRequest("alpha", "test")))
    data[4:6] = (PROTOCOL_VERSION + 1).to_bytes(2, "big")
    error = federation.refusal("alpha", POLL_METHOD, bytes(data))
    _assert_coded(error, grpc.StatusCode.INVALID_ARGUMENT, "PROTOCOL_VERSION")


def test_an_aggregator_that_witnesses_nothing_says_so_with_a_code(federation: Federation) -> None:
    """Without a witness store the checkpoint is answered, not dropped: NO_WITNESS, unaccepted."""
    checkpoint = AuditCheckpoint("alpha", {"origin": "silo:alpha", "size": 1}, (), 0, 0)
    ack = codec.decode(federation.call("alpha", SUBMIT_METHOD, codec.encode(checkpoint)))
    assert isinstance(ack, Ack) and (ack.accepted, ack.code) == (False, "NO_WITNESS")


def test_a_checkpoint_over_grpc_is_answered_with_the_aggregators_own_for_the_silo_to_witness(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The server's real wiring (as `aggregator run` builds it): alpha's signed checkpoint,
    sent over mutual TLS, comes back with the aggregator's checkpoint and its acknowledgment,
    which the silo's own checks accept; a second exchange is proven consistent with the first."""
    from aggregator.audit import AggregatorAudit
    from compliance.audit_log import AuditLog
    from silo_node.aggregator_witness import AggregatorLogWitness

    audit = AggregatorAudit(tmp_path / "aggregator-state")
    silo_log = AuditLog.open(tmp_path / "alpha" / "audit.sqlite3", tmp_path / "alpha" / "signing.key", "silo:alpha")
    witness = AggregatorLogWitness(tmp_path / "alpha" / "witness.sqlite3", silo_log, "silo:alpha")
    try:
        for federation in _start(tmp_path, monkeypatch, witness=audit.exchange):
            previous = 0
            for _ in range(2):
                silo_log.record("configuration.changed", actor="person:IT", detail={"setting": "x"})
                sent = silo_log.sign_checkpoint()
                proof = tuple(silo_log.consistency_proof(previous, sent.size)) if previous else ()
                message = AuditCheckpoint("alpha", sent.to_dict(), proof, previous, witness.witnessed_size())
                reply = codec.decode(federation.call("alpha", SUBMIT_METHOD, codec.encode(message)))
                assert isinstance(reply, AggregatorCheckpoint), reply
                assert witness.accept(reply, sent) is None
                previous = sent.size
            assert witness.witnessed_size() == int(reply.checkpoint["size"]) and reply.consistency_proof
    finally:
        silo_log.close()
        audit.close()


def test_a_message_of_the_wrong_kind_is_refused_with_a_code(federation: Federation) -> None:
    error = federation.refusal("alpha", POLL_METHOD, codec.encode(Ack(True)))
    _assert_coded(error, grpc.StatusCode.INVALID_ARGUMENT, "WRONG_MESSAGE_TYPE")


# -- secure-aggregation senders are bound to the certificate ------------------------------------

def _open_phase(board: TaskBoard) -> None:
    """A secure-aggregation phase open for both silos that accepts any answer, so only the
    server's own checks decide what reaches the board."""
    task = SecAggPhaseTask("phase-1", "h" * 64, 1, "masked_input", None)
    board.open_each({"alpha": task, "bravo": task}, lambda _answer: None)


def _vectors() -> tuple[np.ndarray, ...]:
    return (np.arange(4, dtype=np.uint64),)


_FILLERS: dict[Any, Any] = {bytes: b"x" * 32, str: "x", int: 0, bool: False}


def _secagg(cls: type, **given: Any) -> Any:
    """A protocol message with `given` fields and harmless values for the rest, so the test
    follows the protocol's messages as they gain fields (signatures, nonces, commitments)."""
    hints = typing.get_type_hints(cls)
    values = {}
    for item in dataclasses.fields(cls):
        if item.name in given:
            values[item.name] = given[item.name]
        elif item.default is not dataclasses.MISSING:
            values[item.name] = item.default
        else:
            origin = typing.get_origin(hints[item.name]) or hints[item.name]
            values[item.name] = {tuple: (), dict: {}}.get(origin, _FILLERS.get(origin))
    return cls(**values)


SPOOFS: dict[str, Callable[[str], Any]] = {
    "MaskedInput": lambda sender: _secagg(MaskedInput, session_id=SESSION, sender=sender, vectors=_vectors()),
    "UnmaskResponse": lambda sender: _secagg(UnmaskResponse, session_id=SESSION, sender=sender,
                                             self_mask_shares={"bravo": b"x"}),
    "SharesBundle": lambda sender: SharesBundle((
        _secagg(EncryptedShare, session_id=SESSION, sender="alpha", recipient="charlie", ciphertext=b"c"),
        _secagg(EncryptedShare, session_id=SESSION, sender=sender, recipient="bravo", ciphertext=b"c"))),
    "ConsistencySignature": lambda sender: _secagg(ConsistencySignature, session_id=SESSION, sender=sender),
}


@pytest.mark.parametrize("kind", sorted(SPOOFS))
def test_a_secagg_message_naming_another_sender_never_reaches_the_board(federation: Federation, kind: str) -> None:
    _open_phase(federation.board)
    spoof = SecAggReply("alpha", "phase-1", "h" * 64, 1, SPOOFS[kind]("bravo"))
    error = federation.refusal("alpha", SUBMIT_METHOD, codec.encode(spoof))
    _assert_coded(error, grpc.StatusCode.PERMISSION_DENIED, "SECAGG_SENDER_MISMATCH")
    assert ("alpha", "SECAGG_SENDER_MISMATCH") in federation.refused
    honest = SecAggReply("alpha", "phase-1", "h" * 64, 1, SPOOFS[kind]("alpha"))
    ack = codec.decode(federation.call("alpha", SUBMIT_METHOD, codec.encode(honest)))
    assert ack == Ack(True), "the same message naming its real sender is accepted"
    assert set(federation.board.close()) == {"alpha"}


def test_a_key_advertisement_naming_another_sender_is_refused(federation: Federation) -> None:
    result = TrainResult("alpha", "t", "h" * 64, 1, (), _vectors(),
                         secagg=_secagg(KeyAdvertisement, session_id=SESSION, sender="bravo"))
    error = federation.refusal("alpha", SUBMIT_METHOD, codec.encode(result))
    _assert_coded(error, grpc.StatusCode.PERMISSION_DENIED, "SECAGG_SENDER_MISMATCH")


# -- the silo side: the aggregator's responses are bounded and malformed ones are coded ---------

class _HostileAggregator:
    """A gRPC server with the aggregator's own certificate that answers every call with the
    bytes it is given: what a compromised or buggy aggregator could send a silo."""

    def __init__(self, aggregator_dir: Path, response: bytes) -> None:
        self.response = response
        credentials = grpc.ssl_server_credentials(
            [((aggregator_dir / "server.key").read_bytes(), (aggregator_dir / "server.pem").read_bytes())],
            root_certificates=(aggregator_dir / "ca.pem").read_bytes(), require_client_auth=True)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2),
                                  options=[("grpc.max_send_message_length", 64 * 1024 * 1024)])
        answer = grpc.unary_unary_rpc_method_handler(lambda _request, _context: self.response,
                                                     lambda b: b, lambda b: b)
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            SERVICE_NAME, {POLL_METHOD: answer, SUBMIT_METHOD: answer}),))
        self.port = self.server.add_secure_port("127.0.0.1:0", credentials)
        self.server.start()


@pytest.fixture()
def hostile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[_HostileAggregator, SiloConfig, DecodeCounter]]:
    fed = provision_federation(tmp_path / "fed", "wire-test", ["alpha"], "127.0.0.1:1")
    alpha = _issue(fed.aggregator_dir, "alpha")
    for name, data in (("ca.pem", alpha.ca), ("silo.pem", alpha.cert), ("silo.key", alpha.key)):
        (tmp_path / name).write_bytes(data)
    aggregator = _HostileAggregator(fed.aggregator_dir, b"{not a message")
    config = SiloConfig(
        silo_id="alpha", federation="wire-test", aggregator_address=f"127.0.0.1:{aggregator.port}",
        tls=TLSFiles(ca_certificate=tmp_path / "ca.pem", certificate=tmp_path / "silo.pem",
                     private_key=tmp_path / "silo.key"),
        state_dir=tmp_path / "state", max_backoff_s=0.2, call_timeout_s=5.0,
    )
    decodes = DecodeCounter()
    monkeypatch.setattr(codec, "decode", decodes)
    try:
        yield aggregator, config, decodes
    finally:
        aggregator.server.stop(0).wait()


def test_a_malformed_response_becomes_a_coded_log_line_not_a_crash(
        hostile: tuple[_HostileAggregator, SiloConfig, DecodeCounter], caplog: pytest.LogCaptureFixture) -> None:
    aggregator, config, _ = hostile
    connection = AggregatorConnection(config)
    try:
        with caplog.at_level(logging.ERROR, logger="healthfed.silo.connection"):
            waited = connection.poll(PollRequest("alpha", "test"))
            ack = connection.submit(PollRequest("alpha", "test"))
    finally:
        connection.close()
    assert isinstance(waited, Wait) and waited.reason.startswith("WIRE_FORMAT: ")
    assert ack == Ack(False, "WIRE_FORMAT", "the aggregator's response was not a valid HealthFed message")
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2 and all(line.startswith("WIRE_FORMAT: ") for line in lines), lines
    assert not any(fragment in line for line in lines for fragment in _PYTHON_TEXT), lines


def test_a_response_over_the_silos_bound_is_never_decoded(
        hostile: tuple[_HostileAggregator, SiloConfig, DecodeCounter], monkeypatch: pytest.MonkeyPatch) -> None:
    aggregator, config, decodes = hostile
    monkeypatch.setattr(silo_connection, "MAX_RESPONSE_BYTES", 64 * 1024)
    aggregator.response = codec.encode(Wait(1.0, "x" * 60_000)) + b"\0" * 10_000
    connection = AggregatorConnection(config)
    try:
        with pytest.raises(grpc.RpcError) as caught:
            connection.poll(PollRequest("alpha", "test"), retry_until=time.time() + 0.5)
    finally:
        connection.close()
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert decodes.calls == 0


def test_a_request_the_aggregator_refuses_as_too_large_is_not_retried(federation: Federation, tmp_path: Path) -> None:
    alpha = federation.silos["alpha"]
    for name, data in (("ca.pem", alpha.ca), ("silo.pem", alpha.cert), ("silo.key", alpha.key)):
        (tmp_path / name).write_bytes(data)
    config = SiloConfig(
        silo_id="alpha", federation="wire-test", aggregator_address=f"127.0.0.1:{federation.port}",
        tls=TLSFiles(ca_certificate=tmp_path / "ca.pem", certificate=tmp_path / "silo.pem",
                     private_key=tmp_path / "silo.key"),
        state_dir=tmp_path / "state", max_backoff_s=0.2, call_timeout_s=5.0,
    )
    federation.service.set_submit_limit(32 * 1024)
    stop = threading.Event()
    give_up = threading.Timer(15.0, stop.set)  # a retrying connection fails the test instead of hanging it
    give_up.start()
    connection = AggregatorConnection(config, stop=stop)
    try:
        ack = connection.submit(TrainResult("alpha", "t", "h", 1, (), (np.zeros(8192, dtype=np.int64),)))
    finally:
        give_up.cancel()
        connection.close()
    assert ack == Ack(False, "MESSAGE_TOO_LARGE", "the aggregator refused the submission")
    assert federation.refused.count(("alpha", "MESSAGE_TOO_LARGE")) == 1, "sent once, not retried"


# -- the Submit limit follows the plan ------------------------------------------------------------

def test_the_submit_limit_covers_the_largest_honest_answer_and_not_three_times_it() -> None:
    shapes = [(4, 1), (1,), (1000, 500)]
    participants = 12
    limit = limit_for_elements(element_count(shapes), secure=True, participants=participants)
    ids = dict(silo_id="a-long-hospital-id-" * 3, task_id="train-" + "t" * 80, plan_hash="h" * 64, round=10**6)
    honest = [
        TrainResult(**ids, metrics_part=(np.zeros(3, np.float32),),
                    secure_parts=tuple(np.zeros(s, np.int64) for s in shapes), declarations={"epsilon": 3.0}),
        SecAggReply(**ids, payload=_secagg(MaskedInput, session_id=SESSION, sender=ids["silo_id"],
                                           vectors=tuple(np.zeros(int(np.prod(s)), np.uint64) for s in shapes))),
        SecAggReply(**ids, payload=SharesBundle(tuple(
            _secagg(EncryptedShare, session_id=SESSION, sender=ids["silo_id"], recipient=f"peer-{i:040d}",
                    ciphertext=b"c" * 512) for i in range(participants)))),
    ]
    for answer in honest:
        assert len(codec.encode(answer)) <= limit, type(answer.payload if isinstance(answer, SecAggReply) else answer)
    inflated = TrainResult(**ids, metrics_part=(), secure_parts=tuple(np.zeros(s, np.int64) for s in shapes * 3))
    assert len(codec.encode(inflated)) > limit


def test_the_submit_limit_of_a_real_plan_fits_its_computations_output() -> None:
    from healthfed_common.learning_process import build_federated_computations
    from healthfed_common.plan import Plan
    from healthfed_common.tff_types import flatten_tensor_types
    from tests.federation.conftest import toy_plan

    plan = Plan.model_validate(toy_plan())
    computations = build_federated_computations(plan)
    limit = submit_limit_bytes(plan, computations, participants=3)
    leaves = flatten_tensor_types(computations.work.type_signature.result)
    arrays = [np.zeros([d or 1 for d in leaf.shape], leaf.dtype) for leaf in leaves if not leaf.is_sequence]
    split = computations.work_parts[0]
    result = TrainResult("alpha", "t" * 80, plan.plan_hash, 1, tuple(arrays[:split]), tuple(arrays[split:]))
    assert len(codec.encode(result)) <= limit < 4 * 1024 * 1024, (len(codec.encode(result)), limit)
