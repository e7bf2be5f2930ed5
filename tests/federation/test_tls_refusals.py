"""Each refusal of the aggregator's transport, over a real TLS connection on loopback."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from aggregator import pki
from aggregator.config import load_aggregator_config
from aggregator.server import FederationService, start_server
from aggregator.state_store import StateStore
from aggregator.task_board import TaskBoard
from healthfed_common.wire import codec
from healthfed_common.wire.messages import PollRequest, Wait
from healthfed_common.wire.service import POLL_METHOD, SERVICE_NAME
from pipelines.local_federation import free_port, provision_local_federation
from silo_node.enrolment import build_csr


@pytest.fixture()
def federation(tmp_path: Path):
    port = free_port()
    fed = provision_local_federation(tmp_path / "fed", "tls-test", ["alpha", "bravo"], f"127.0.0.1:{port}")
    config = load_aggregator_config(fed.aggregator_config)
    store = StateStore(config.state_dir / "aggregator.sqlite3")
    refused: list[tuple[str, str]] = []
    service = FederationService(TaskBoard(), store, frozenset(config.silos),
                                on_refused_connection=lambda who, code, _m: refused.append((who, code)))
    server, bound = start_server(config, service)
    yield fed, bound, store, refused
    server.stop(0).wait()
    store.close()


def _poll(port: int, ca: bytes, cert: bytes | None, key: bytes | None, silo_id: str) -> object:
    credentials = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    with grpc.secure_channel(
        f"127.0.0.1:{port}", credentials, options=[("grpc.ssl_target_name_override", pki.AGGREGATOR_TLS_NAME)]
    ) as channel:
        call = channel.unary_unary(f"/{SERVICE_NAME}/{POLL_METHOD}")
        return codec.decode(call(codec.encode(PollRequest(silo_id, "test")), timeout=10))


def _kit(fed, silo: str) -> tuple[bytes, bytes, bytes]:
    kit = fed.kits[silo]
    return (kit / "ca.pem").read_bytes(), (kit / "silo.pem").read_bytes(), (kit / "silo.key").read_bytes()


def _certificate_for_new_key(fed, silo_id: str, **validity: dt.datetime) -> tuple[bytes, bytes]:
    """A key made here and a certificate the federation's CA issued for it from a CSR (what
    a stolen CA key, or a test, can produce): (certificate PEM, key PEM)."""
    ca_issued = pki.load_issued(fed.aggregator_dir / "ca.pem", fed.aggregator_dir / "ca.key")
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = pki.issue_silo_certificate_from_csr(ca_issued, build_csr(key, silo_id), silo_id, **validity)
    return (certificate.public_bytes(pki.serialization.Encoding.PEM), key.private_bytes(
        pki.serialization.Encoding.PEM, pki.serialization.PrivateFormat.PKCS8, pki.serialization.NoEncryption()))


def test_enrolled_silo_with_its_own_certificate_is_served(federation) -> None:
    fed, port, _, _ = federation
    ca, cert, key = _kit(fed, "alpha")
    assert isinstance(_poll(port, ca, cert, key, "alpha"), Wait)


def test_connection_without_client_certificate_is_refused(federation) -> None:
    fed, port, _, _ = federation
    ca, _, _ = _kit(fed, "alpha")
    with pytest.raises(grpc.RpcError) as error:
        _poll(port, ca, None, None, "alpha")
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE  # TLS handshake fails


def test_certificate_from_another_federation_ca_is_refused(federation, tmp_path: Path) -> None:
    fed, port, _, _ = federation
    other = provision_local_federation(tmp_path / "other", "other", ["alpha"], f"127.0.0.1:{port}")
    ca, _, _ = _kit(fed, "alpha")
    _, foreign_cert, foreign_key = _kit(other, "alpha")
    with pytest.raises(grpc.RpcError) as error:
        _poll(port, ca, foreign_cert, foreign_key, "alpha")
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE


def test_silo_cannot_send_messages_as_another_silo(federation) -> None:
    fed, port, _, refused = federation
    ca, cert, key = _kit(fed, "alpha")
    with pytest.raises(grpc.RpcError) as error:
        _poll(port, ca, cert, key, "bravo")
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "IDENTITY_MISMATCH" in error.value.details()
    assert ("alpha", "IDENTITY_MISMATCH") in refused


def test_expired_certificate_is_refused(federation) -> None:
    fed, port, _, _ = federation
    now = dt.datetime.now(dt.timezone.utc)
    cert, key = _certificate_for_new_key(fed, "alpha", not_before=now - dt.timedelta(days=30),
                                         not_after=now - dt.timedelta(days=1))
    ca, _, _ = _kit(fed, "alpha")
    with pytest.raises(grpc.RpcError) as error:
        _poll(port, ca, cert, key, "alpha")
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE


def test_revoked_certificate_is_refused_on_its_next_call(federation) -> None:
    fed, port, store, refused = federation
    ca, cert, key = _kit(fed, "alpha")
    assert isinstance(_poll(port, ca, cert, key, "alpha"), Wait)
    store.revoke(pki.certificate_serial_hex(cert), "alpha", "laptop stolen")
    with pytest.raises(grpc.RpcError) as error:
        _poll(port, ca, cert, key, "alpha")
    assert error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "CERTIFICATE_REVOKED" in error.value.details()
    assert ("alpha", "CERTIFICATE_REVOKED") in refused
    ca_b, cert_b, key_b = _kit(fed, "bravo")
    assert isinstance(_poll(port, ca_b, cert_b, key_b, "bravo"), Wait)


def test_certificate_of_a_silo_not_enrolled_is_refused(federation) -> None:
    fed, port, _, _ = federation
    cert, key = _certificate_for_new_key(fed, "charlie")
    ca, _, _ = _kit(fed, "alpha")
    with pytest.raises(grpc.RpcError) as error:
        _poll(port, ca, cert, key, "charlie")
    assert "NOT_ENROLLED" in error.value.details()


def test_the_service_itself_refuses_a_caller_without_a_certificate(federation) -> None:
    """Defence in depth: `start_server` demands a client certificate in the TLS handshake
    (test_connection_without_client_certificate_is_refused), but the service does not rely on
    it. Hosted on a TLS port that does not demand one (a transport configured by someone
    else, e.g. TLS ending in a proxy), a caller without a certificate still reaches no silo's
    tasks: UNAUTHENTICATED with NO_CLIENT_CERTIFICATE, reported to the refusal hook, and the
    task board is never asked."""
    from concurrent import futures

    from aggregator.server import _identity
    from healthfed_common.wire.service import SUBMIT_METHOD

    fed, _, store, _ = federation
    config = load_aggregator_config(fed.aggregator_config)
    asked: list[str] = []

    class Board(TaskBoard):
        def poll(self, silo_id: str) -> Any:
            asked.append(silo_id)
            return super().poll(silo_id)

    refused: list[tuple[str, str]] = []
    service = FederationService(Board(), store, frozenset(config.silos),
                                on_refused_connection=lambda who, code, _m: refused.append((who, code)))
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handlers = {name: grpc.unary_unary_rpc_method_handler(method, _identity, _identity)
                for name, method in ((POLL_METHOD, service.poll), (SUBMIT_METHOD, service.submit))}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    credentials = grpc.ssl_server_credentials(
        [(config.tls.private_key.read_bytes(), config.tls.certificate.read_bytes())], require_client_auth=False)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        ca, _, _ = _kit(fed, "alpha")
        with pytest.raises(grpc.RpcError) as error:
            _poll(port, ca, None, None, "alpha")
    finally:
        server.stop(0).wait()
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.value.details() == "NO_CLIENT_CERTIFICATE: a client certificate is required"
    assert refused == [("unknown", "NO_CLIENT_CERTIFICATE")]
    assert asked == []
