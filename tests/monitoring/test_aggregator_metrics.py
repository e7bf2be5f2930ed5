"""Aggregator metrics, scraped from a real `/metrics` endpoint on loopback; connection
refusals counted from a real mutual-TLS gRPC endpoint through the service's refusal hook."""

from __future__ import annotations

import socket
from pathlib import Path

import grpc
import pytest

from aggregator import pki
from aggregator.config import load_aggregator_config
from aggregator.metrics import AggregatorMetrics
from pipelines.local_federation import provision_local_federation
from aggregator.server import FederationService, start_server
from aggregator.state_store import StateStore
from aggregator.task_board import TaskBoard
from healthfed_common.wire import codec
from healthfed_common.wire.messages import PollRequest
from healthfed_common.wire.service import POLL_METHOD, SERVICE_NAME
from tests.monitoring.scrape import scrape


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_round_refusal_and_byte_metrics_are_scraped_over_http() -> None:
    metrics = AggregatorMetrics("cardiology", enrolled={"st-marys", "riverside", "hillcrest"})
    server = metrics.serve(0)
    try:
        metrics.round_completed(4.2, silos=3, round_number=1)
        metrics.round_completed(75.0, silos=2, round_number=2)
        metrics.refusal("FEATURE_NOT_ALLOWED")
        metrics.refusal("FEATURE_NOT_ALLOWED")
        metrics.refusal("AWAITING_APPROVAL")
        metrics.no_answer(2)
        metrics.silo_seen("st-marys")
        metrics.silo_seen("st-marys")
        metrics.silo_seen("riverside")
        metrics.silo_seen("intruder")  # not enrolled: never becomes a label
        metrics.connection_refused("whoever", "NOT_ENROLLED", "free text never exported")
        metrics.bytes_in(1000)
        metrics.bytes_in(24)
        metrics.bytes_out(512)
        metrics.plan_finished("completed")
        samples = scrape(server.url)
    finally:
        server.close()

    assert samples[("healthfed_aggregator_rounds_completed_total", ())] == 2
    assert samples[("healthfed_aggregator_round_duration_seconds_count", ())] == 2
    assert samples[("healthfed_aggregator_round_duration_seconds_sum", ())] == pytest.approx(79.2)
    assert samples[("healthfed_aggregator_round_duration_seconds_bucket", (("le", "5.0"),))] == 1
    assert samples[("healthfed_aggregator_round_duration_seconds_bucket", (("le", "120.0"),))] == 2
    assert samples[("healthfed_aggregator_round_silos", ())] == 2
    assert samples[("healthfed_aggregator_current_round", ())] == 2
    assert samples[("healthfed_aggregator_task_refusals_total", (("code", "FEATURE_NOT_ALLOWED"),))] == 2
    assert samples[("healthfed_aggregator_task_refusals_total", (("code", "AWAITING_APPROVAL"),))] == 1
    assert samples[("healthfed_aggregator_task_no_answer_total", ())] == 2
    assert samples[("healthfed_aggregator_silos_seen", ())] == 2
    assert samples[("healthfed_aggregator_silos_enrolled", ())] == 3
    assert ("healthfed_aggregator_silo_last_seen_timestamp_seconds", (("silo", "st-marys"),)) in samples
    assert not any(dict(labels).get("silo") == "intruder" for _, labels in samples)
    assert samples[("healthfed_aggregator_connection_refusals_total", (("code", "NOT_ENROLLED"),))] == 1
    assert samples[("healthfed_aggregator_received_bytes_total", ())] == 1024
    assert samples[("healthfed_aggregator_sent_bytes_total", ())] == 512
    assert samples[("healthfed_aggregator_plans_finished_total", (("status", "completed"),))] == 1
    assert samples[("healthfed_aggregator_info", (("federation", "cardiology"),))] == 1


def test_endpoint_binds_loopback_by_default_and_registries_are_isolated() -> None:
    first, second = AggregatorMetrics("a"), AggregatorMetrics("b")
    first.round_completed(1.0, silos=1)
    server = second.serve(0)
    try:
        assert server.address == "127.0.0.1"
        assert server._server.server_address[0] == "127.0.0.1"
        samples = scrape(server.url)
    finally:
        server.close()
    assert samples[("healthfed_aggregator_rounds_completed_total", ())] == 0
    # the port is released on close
    with socket.socket() as sock:
        # SO_REUSEADDR: the scrape's connection may sit in TIME_WAIT; a listener still
        # holding the port would make this bind fail regardless.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", server.port))


@pytest.fixture()
def tls_federation(tmp_path: Path):
    port = _free_port()
    fed = provision_local_federation(tmp_path / "fed", "metrics-test", ["alpha", "bravo"], f"127.0.0.1:{port}")
    config = load_aggregator_config(fed.aggregator_config)
    store = StateStore(config.state_dir / "aggregator.sqlite3")
    metrics = AggregatorMetrics("metrics-test", enrolled=set(config.silos))
    service = FederationService(TaskBoard(), store, frozenset(config.silos),
                                on_refused_connection=metrics.connection_refused)
    server, bound = start_server(config, service)
    yield fed, bound, store, metrics
    server.stop(0).wait()
    store.close()


def _poll(port: int, kit: Path, claimed: str) -> None:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(kit / "ca.pem").read_bytes(),
        private_key=(kit / "silo.key").read_bytes(),
        certificate_chain=(kit / "silo.pem").read_bytes(),
    )
    with grpc.secure_channel(
        f"127.0.0.1:{port}", credentials, options=[("grpc.ssl_target_name_override", pki.AGGREGATOR_TLS_NAME)]
    ) as channel:
        call = channel.unary_unary(f"/{SERVICE_NAME}/{POLL_METHOD}")
        codec.decode(call(codec.encode(PollRequest(claimed, "test")), timeout=10))


def test_refused_mtls_connections_are_counted_by_code(tls_federation) -> None:
    fed, port, store, metrics = tls_federation
    with pytest.raises(grpc.RpcError):
        _poll(port, fed.kits["alpha"], claimed="bravo")
    serial = pki.certificate_serial_hex((fed.kits["bravo"] / "silo.pem").read_bytes())
    store.revoke(serial, "bravo", "test")
    with pytest.raises(grpc.RpcError):
        _poll(port, fed.kits["bravo"], claimed="bravo")
    _poll(port, fed.kits["alpha"], claimed="alpha")  # accepted: not counted
    server = metrics.serve(0)
    try:
        samples = scrape(server.url)
    finally:
        server.close()
    refusals = {dict(labels)["code"]: value for (name, labels), value in samples.items()
                if name == "healthfed_aggregator_connection_refusals_total"}
    assert refusals == {"IDENTITY_MISMATCH": 1, "CERTIFICATE_REVOKED": 1}
