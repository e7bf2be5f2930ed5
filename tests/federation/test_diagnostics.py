"""`silo-node check` and the polling loop's log line name the real cause of a failed
connection: bad DNS name, refused port, wrong CA, expired certificates, clock skew; and user
mistakes (a folder as --config, a misspelt certificate path, a file as state folder) give a
coded message and exit 1, never a traceback. Every case runs over real sockets on loopback."""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
import yaml

from aggregator import pki
from aggregator.config import load_aggregator_config
from aggregator.server import FederationService, start_server
from aggregator.state_store import StateStore
from aggregator.task_board import TaskBoard
from healthfed_common.startup_kit import load_silo_config
from healthfed_common.wire.messages import PollRequest
from pipelines.local_federation import free_port, provision_local_federation
from silo_node.cli.main import main as silo_main
from silo_node.connection import AggregatorConnection
from silo_node.diagnostics import FAIL, OK, Check, describe_rpc_error, run_checks
from silo_node.enrolment import build_csr

REPO = Path(__file__).resolve().parents[2]
NOW = dt.datetime.now(dt.timezone.utc)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("diag")
    return provision_local_federation(root / "fed", "diag", ["alpha", "bravo"], f"127.0.0.1:{free_port()}")


def _kit_copy(fed, tmp_path: Path, **changes: object) -> Path:
    """A copy of alpha's kit with silo.yaml keys replaced (e.g. aggregator_address)."""
    kit = tmp_path / "kit"
    kit.mkdir()
    for item in fed.kits["alpha"].iterdir():
        if item.is_file():
            (kit / item.name).write_bytes(item.read_bytes())
            os.chmod(kit / item.name, item.stat().st_mode & 0o777)
    document = yaml.safe_load((kit / "silo.yaml").read_text())
    document.update(changes)
    (kit / "silo.yaml").write_text(yaml.safe_dump(document))
    return kit / "silo.yaml"


def _by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def _last(checks: list[Check]) -> Check:
    return checks[-1]


@pytest.fixture()
def aggregator(federation) -> Iterator[int]:
    """The real aggregator transport on the kit's port."""
    config = load_aggregator_config(federation.aggregator_config)
    store = StateStore(config.state_dir / "aggregator.sqlite3")
    server, port = start_server(config, FederationService(TaskBoard(), store, frozenset(config.silos)))
    yield port
    server.stop(0).wait()
    store.close()


def _grpc_server(ca_pem: bytes, issued: pki.Issued) -> tuple[grpc.Server, int]:
    """A gRPC server with mutual TLS and a certificate of the test's choosing."""
    key_pem = issued.key.private_bytes(pki.serialization.Encoding.PEM, pki.serialization.PrivateFormat.PKCS8,
                                       pki.serialization.NoEncryption())
    cert_pem = issued.certificate.public_bytes(pki.serialization.Encoding.PEM)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    credentials = grpc.ssl_server_credentials([(key_pem, cert_pem)], root_certificates=ca_pem, require_client_auth=True)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    return server, port


def _aggregator_certificate(ca: pki.Issued, not_before: dt.datetime, not_after: dt.datetime) -> pki.Issued:
    key = pki.ec.generate_private_key(pki.ec.SECP256R1())
    certificate = pki._leaf(ca, key.public_key(), pki.AGGREGATOR_TLS_NAME, pki.ExtendedKeyUsageOID.SERVER_AUTH,
                            [pki.x509.DNSName(pki.AGGREGATOR_TLS_NAME)], not_before, not_after, 1)
    return pki.Issued(key, certificate)


def test_a_ready_kit_passes_every_check(federation, aggregator: int, tmp_path: Path) -> None:
    config = _kit_copy(federation, tmp_path, aggregator_address=f"127.0.0.1:{aggregator}")
    (config.parent / "state").mkdir(mode=0o700)
    checks = run_checks(config, timeout_s=5)
    assert [c.status for c in checks] == [OK] * len(checks), "\n".join(c.line() for c in checks)
    assert "gRPC (HTTP/2) answered" in _last(checks).detail


def test_bad_dns_name(federation, tmp_path: Path) -> None:
    config = _kit_copy(federation, tmp_path, aggregator_address="fl.no-such-host.invalid:50051")
    dns = _by_name(run_checks(config))["DNS"]
    assert dns.status == FAIL and "'fl.no-such-host.invalid' does not resolve" in dns.detail


def test_refused_port(federation, tmp_path: Path) -> None:
    port = free_port()
    config = _kit_copy(federation, tmp_path, aggregator_address=f"127.0.0.1:{port}")
    tcp = _last(run_checks(config))
    assert (tcp.name, tcp.status) == ("TCP", FAIL) and f"connection refused at 127.0.0.1:{port}" in tcp.detail


def test_wrong_ca(federation, tmp_path: Path) -> None:
    other_ca = pki.create_ca("another-federation")
    server_cert = pki.issue_server_certificate(other_ca, ["127.0.0.1"])
    kit_ca = (federation.kits["alpha"] / "ca.pem").read_bytes()
    server, port = _grpc_server(kit_ca, server_cert)
    try:
        config = _kit_copy(federation, tmp_path, aggregator_address=f"127.0.0.1:{port}")
        tls = _last(run_checks(config))
    finally:
        server.stop(0)
    assert tls.status == FAIL and "not signed by this kit's CA" in tls.detail and "another-federation" in tls.detail


def test_expired_aggregator_certificate(federation, tmp_path: Path) -> None:
    ca = pki.load_issued(federation.aggregator_dir / "ca.pem", federation.aggregator_dir / "ca.key")
    expired = _aggregator_certificate(ca, NOW - dt.timedelta(days=30), NOW - dt.timedelta(days=1))
    server, port = _grpc_server(ca.certificate.public_bytes(pki.serialization.Encoding.PEM), expired)
    try:
        tls = _last(run_checks(_kit_copy(federation, tmp_path, aggregator_address=f"127.0.0.1:{port}")))
    finally:
        server.stop(0)
    assert tls.status == FAIL and "expired on" in tls.detail and "renew" in tls.fix


def test_clock_skew_is_explained_with_both_clocks(federation, tmp_path: Path) -> None:
    """An aggregator certificate issued 'in the future' by this host's clock: the host is behind."""
    ca = pki.load_issued(federation.aggregator_dir / "ca.pem", federation.aggregator_dir / "ca.key")
    now = dt.datetime.now(dt.timezone.utc)  # not the module's NOW: earlier tests may have taken minutes
    ahead = _aggregator_certificate(ca, now + dt.timedelta(hours=2), now + dt.timedelta(days=30))
    server, port = _grpc_server(ca.certificate.public_bytes(pki.serialization.Encoding.PEM), ahead)
    try:
        tls = _last(run_checks(_kit_copy(federation, tmp_path, aggregator_address=f"127.0.0.1:{port}")))
    finally:
        server.stop(0)
    assert tls.status == FAIL and "not yet valid" in tls.detail
    skew = re.search(r"(\d+) h (\d+) min", tls.detail)
    assert skew is not None, tls.detail
    assert 115 <= int(skew.group(1)) * 60 + int(skew.group(2)) <= 120, tls.detail
    assert "clock" in tls.fix and "NTP" in tls.fix


def test_expired_silo_certificate_and_bad_key_mode_are_found_before_any_connection(federation, tmp_path: Path) -> None:
    config_path = _kit_copy(federation, tmp_path)
    kit = config_path.parent
    ca = pki.load_issued(federation.aggregator_dir / "ca.pem", federation.aggregator_dir / "ca.key")
    key = pki.serialization.load_pem_private_key((kit / "silo.key").read_bytes(), password=None)
    expired = pki.issue_silo_certificate_from_csr(ca, build_csr(key, "alpha"), "alpha",
                                                  not_before=NOW - dt.timedelta(days=400),
                                                  not_after=NOW - dt.timedelta(days=35))
    pki.write_certificate(kit / "silo.pem", expired)
    os.chmod(kit / "silo.key", 0o644)
    checks = _by_name(run_checks(config_path))
    assert checks["certificate validity"].status == FAIL and "expired on" in checks["certificate validity"].detail
    assert checks["kit file (TLS private key)"].status == FAIL and "chmod 600" in checks["kit file (TLS private key)"].fix
    assert checks["certificate issuer"].status == OK and checks["certificate name"].status == OK
    assert checks["network"].detail.startswith("not tested")


def test_certificate_of_another_silo_or_ca(federation, tmp_path: Path) -> None:
    config_path = _kit_copy(federation, tmp_path)
    kit = config_path.parent
    (kit / "silo.pem").write_bytes((federation.kits["bravo"] / "silo.pem").read_bytes())
    checks = _by_name(run_checks(config_path))
    assert checks["certificate name"].status == FAIL and "'bravo'" in checks["certificate name"].detail
    assert checks["private key"].status == FAIL
    other = pki.create_ca("elsewhere")
    (kit / "ca.pem").write_bytes(other.certificate.public_bytes(pki.serialization.Encoding.PEM))
    checks = _by_name(run_checks(config_path))
    assert checks["certificate issuer"].status == FAIL and "not issued by the kit's CA" in checks["certificate issuer"].detail


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("fl.no-such-host.invalid:50051", "DNS name 'fl.no-such-host.invalid' does not resolve"),
        ("refused", "connection refused at 127.0.0.1:"),
    ],
)
def test_the_polling_loop_logs_address_and_cause(
    federation, tmp_path: Path, caplog: pytest.LogCaptureFixture, address: str, expected: str
) -> None:
    if address == "refused":
        address = f"127.0.0.1:{free_port()}"
    config = load_silo_config(_kit_copy(federation, tmp_path, aggregator_address=address))
    connection = AggregatorConnection(config, call_timeout_s=5)
    caplog.set_level(logging.INFO, logger="healthfed.silo.connection")
    try:
        with pytest.raises(grpc.RpcError) as caught:
            connection.poll(PollRequest("alpha", "test"), retry_until=time.time() + 0.2)
    finally:
        connection.close()
    assert expected in describe_rpc_error(caught.value, address, config.aggregator_tls_name)
    retried = [r.getMessage() for r in caplog.records if "aggregator unreachable" in r.getMessage()]
    assert retried and expected in retried[0] and "UNAVAILABLE" in retried[0]


def test_the_polling_loop_names_a_tls_failure(federation, tmp_path: Path) -> None:
    other_ca = pki.create_ca("another-federation")
    server, port = _grpc_server((federation.kits["alpha"] / "ca.pem").read_bytes(),
                                pki.issue_server_certificate(other_ca, ["127.0.0.1"]))
    address = f"127.0.0.1:{port}"
    config = load_silo_config(_kit_copy(federation, tmp_path, aggregator_address=address))
    connection = AggregatorConnection(config, call_timeout_s=5)
    try:
        with pytest.raises(grpc.RpcError) as caught:
            connection.poll(PollRequest("alpha", "test"), retry_until=time.time())
    finally:
        connection.close()
        server.stop(0)
    assert f"TLS handshake with {address} failed" in describe_rpc_error(caught.value, address, "healthfed-aggregator")


def _silo_node(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "silo_node.cli.main", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO), "HEALTHFED_OPERATOR": "it"})


def test_user_mistakes_give_coded_messages_not_tracebacks(federation, tmp_path: Path) -> None:
    kit_dir = federation.kits["alpha"]
    misspelt = _kit_copy(federation, tmp_path)
    document = yaml.safe_load(misspelt.read_text())
    document["tls"]["certificate"] = "silo.pen"
    misspelt.write_text(yaml.safe_dump(document))
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    cases = [
        (["check", "--config", str(kit_dir)], "is a folder, not silo.yaml"),
        (["check", "--config", str(tmp_path / "nope.yaml")], "does not exist"),
        (["check", "--config", str(misspelt)], "silo.pen does not exist"),
        (["run", "--config", str(kit_dir)], "refused [CONFIG_INVALID]"),
        (["run", "--config", str(misspelt)], "refused [KIT_INVALID]"),
        (["plans", "list", "--state-dir", str(a_file)], "refused [PATH_UNUSABLE]"),
        (["data", "add", "x", str(tmp_path), "--kind", "tabular", "--policy", str(tmp_path / "p.yaml"),
          "--config", str(kit_dir)], "refused [NODE_CONFIG_INVALID]"),
    ]
    for args, expected in cases:
        result = _silo_node(*args, cwd=tmp_path)
        assert result.returncode == 1, (args, result.stderr)
        assert expected in result.stdout + result.stderr, (args, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr, (args, result.stderr)


def test_check_cli_prints_each_line_and_exits_1_on_failure(federation, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    config = _kit_copy(federation, tmp_path, aggregator_address=f"127.0.0.1:{free_port()}")
    assert silo_main(["check", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "OK   certificate issuer" in out and "FAIL TCP: connection refused" in out and "fix: start the aggregator" in out
