"""IHE ATNA forwarding against a real rsyslog (Debian's rsyslog + rsyslog-gnutls) receiving
RFC 5425 TLS syslog with mutual authentication and writing every message to a file.

The outage test sends a run's events, stops the repository while the node keeps recording,
restarts it and finds every event in the repository's file exactly once (the repository
configuration does no deduplication: exactly-once in the normal outage path is by design of
the outbox). Without rsyslogd the tests skip with the reason, except under CI=true where
`.ci/run` installs it and a missing server is a failure.
"""

from __future__ import annotations

import datetime as dt
import glob
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from compliance_support import open_log

from compliance.atna import OUTBOX_FILE, Forwarder, OutboxDestinationChanged, SyslogTarget
from compliance.log_store import read_raw_log
from compliance.merkle import leaf_hash
from compliance.node_dir import NodePaths

RSYSLOGD = shutil.which("rsyslogd") or ("/usr/sbin/rsyslogd" if Path("/usr/sbin/rsyslogd").exists() else None)
GTLS = bool(glob.glob("/usr/lib/*/rsyslog/lmnsd_gtls.so") or glob.glob("/usr/lib/rsyslog/lmnsd_gtls.so"))
if not (RSYSLOGD and GTLS):
    if os.environ.get("CI") == "true":
        raise RuntimeError("rsyslogd with the gtls driver is required under CI "
                           "(apt-get install rsyslog rsyslog-gnutls; .ci/run does it)")
    pytestmark = pytest.mark.skip(reason="rsyslogd / rsyslog-gnutls not installed "
                                         "(apt-get install rsyslog rsyslog-gnutls)")

SD = re.compile(r'\[healthfed@32473 origin="([^"]*)" index="(\d+)" leaf="([0-9a-f]{64})"\]')


def _pki(directory: Path) -> dict[str, Path]:
    """A hospital CA, the repository's certificate (localhost) and the node's client
    certificate, plus a rogue CA signing a look-alike repository certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
        return path

    def issue(cn: str, issuer_key, issuer_name, *, ca: bool = False, server: bool = False,
              key=None):  # type: ignore[no-untyped-def]
        key = key or ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(issuer_name or name(cn))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=2))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            builder = builder.add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False), critical=True)
        else:
            builder = builder.add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
        cert = builder.sign(issuer_key or key, hashes.SHA256())
        return key, cert

    def write_cert(cert, path: Path) -> Path:  # type: ignore[no-untyped-def]
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    files: dict[str, Path] = {}
    ca_key, ca_cert = issue("St Mary's audit CA", None, None, ca=True)
    files["ca"] = write_cert(ca_cert, directory / "ca.pem")
    server_key, server_cert = issue("localhost", ca_key, ca_cert.subject, server=True)
    files["server_cert"] = write_cert(server_cert, directory / "server.pem")
    files["server_key"] = write_key(server_key, directory / "server.key")
    client_key, client_cert = issue("silo-st-marys", ca_key, ca_cert.subject)
    files["client_cert"] = write_cert(client_cert, directory / "client.pem")
    files["client_key"] = write_key(client_key, directory / "client.key")
    rogue_key, rogue_ca = issue("Rogue CA", None, None, ca=True)
    rogue_server_key, rogue_server = issue("localhost", rogue_key, rogue_ca.subject, server=True)
    files["rogue_cert"] = write_cert(rogue_server, directory / "rogue.pem")
    files["rogue_key"] = write_key(rogue_server_key, directory / "rogue.key")
    return files


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Rsyslog:
    """A private rsyslogd: TLS (gtls, x509/certvalid: clients need a certificate from the
    CA), RFC 5425 octet-counted input, each message's structured data and body to a file."""

    def __init__(self, directory: Path, pki: dict[str, Path], port: int) -> None:
        self.directory = directory
        self.port = port
        self.out = directory / "repository.log"
        self.conf = directory / "rsyslog.conf"
        work = directory / "work"
        work.mkdir(exist_ok=True)
        self.conf.write_text(f"""
global(workDirectory="{work}" maxMessageSize="64k"
       defaultNetstreamDriver="gtls"
       defaultNetstreamDriverCAFile="{pki['ca']}"
       defaultNetstreamDriverCertFile="{pki['server_cert']}"
       defaultNetstreamDriverKeyFile="{pki['server_key']}")
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1"
       streamDriver.authMode="x509/certvalid")
template(name="atna" type="string" string="%structured-data% %msg%\\n")
ruleset(name="atna") {{ action(type="omfile" file="{self.out}" template="atna") }}
input(type="imtcp" port="{port}" address="127.0.0.1" ruleset="atna")
""", encoding="utf-8")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        assert RSYSLOGD is not None
        self.process = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(self.conf), "-i", str(self.directory / "rsyslog.pid")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.process.stdout.read().decode(errors="replace") if self.process.stdout else ""
                raise RuntimeError(f"rsyslogd exited with {self.process.returncode}: {output}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("rsyslogd did not listen within 20 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=20)
        self.process = None

    def indices(self) -> Counter[int]:
        if not self.out.exists():
            return Counter()
        return Counter(int(m.group(2)) for m in SD.finditer(self.out.read_text(encoding="utf-8")))


@pytest.fixture()
def pki(tmp_path: Path) -> dict[str, Path]:
    return _pki(tmp_path)


@pytest.fixture()
def repository(tmp_path: Path, pki: dict[str, Path]):  # type: ignore[no-untyped-def]
    server = Rsyslog(tmp_path, pki, _free_port())
    server.start()
    yield server
    server.stop()


def _target(port: int, pki: dict[str, Path]) -> SyslogTarget:
    return SyslogTarget("localhost", port, pki["ca"], pki["client_cert"], pki["client_key"])


def _wait(condition, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


def _record(log, n: int, start: int) -> None:  # type: ignore[no-untyped-def]
    plan = "ab" * 32
    for i in range(start, start + n):
        if i % 3 == 0:
            log.record("dp.charge", actor="silo:st-marys", entities={"dataset": "heart"},
                       detail={"dataset": "heart", "plan_hash": plan, "round": i, "epsilon": 0.1,
                               "delta": 1e-6, "epsilon_spent_total": 0.1 * (i // 3 + 1),
                               "epsilon_budget": 100.0, "delta_budget": 1e-5})
        elif i % 3 == 1:
            log.record("payload.released", actor="silo:st-marys", entities={"plan": plan},
                       detail={"plan_hash": plan, "round": i - 1, "kind": "TrainResult",
                               "bytes": 1000 + i, "sha256": f"{i % 256:02x}" * 32,
                               "recipient": "aggregator"})
        else:
            log.record("round.joined", actor="silo:st-marys", detail={"plan_hash": plan, "round": i})


def test_outage_mid_run_delivers_every_event_once_but_one_in_flight_at_the_stop(
        tmp_path: Path, pki: dict[str, Path], repository: Rsyslog) -> None:
    """The node records an event every 20 ms throughout; the repository is stopped (SIGTERM)
    while events flow, stays down for a second, and comes back. Every event arrives exactly
    once and in order, except that an event written to the connection as the repository
    stopped may be dropped by the repository itself (RFC 5425 has no acknowledgements; seen
    in about one run in three of `make test` on two cores, never more than one event): the
    test allows at most two such events, and only ones the outbox marked sent in the second
    around the stop."""
    node = tmp_path / "node"
    open_log(node).close()
    produced = [0]
    producing = threading.Event()
    producing.set()

    def produce() -> None:
        with open_log(node) as log:  # the log object belongs to the thread that opened it
            while producing.is_set():
                _record(log, 1, produced[0])
                produced[0] += 1
                time.sleep(0.02)

    lines: list[str] = []
    forwarder = Forwarder(node, _target(repository.port, pki), hostname="silo-host",
                          status=lines.append)
    stop = threading.Event()
    sender = threading.Thread(target=forwarder.run, args=(stop, 0.02, 0.5), daemon=True)
    producer = threading.Thread(target=produce, daemon=True)
    sender.start()
    producer.start()
    try:
        assert _wait(lambda: len(repository.indices()) >= 20), repository.indices()
        stop_began = time.time()
        repository.stop()                         # the repository goes down mid-run ...
        stop_ended = time.time()
        at_stop = produced[0]
        assert _wait(lambda: produced[0] >= at_stop + 30)   # ... the node keeps recording
        queued, delivered = forwarder.outbox.counts()
        assert delivered < queued and not forwarder.connected, (queued, delivered, lines)
        repository.start()                        # back: the queue drains, in order
        time.sleep(1.0)
        producing.clear()
        producer.join(10)
        total = produced[0]
        # delivered strictly in order, so the last one arriving means every one was sent
        assert _wait(lambda: total - 1 in repository.indices()), (
            sorted(set(range(total)) - set(repository.indices())), lines)
        time.sleep(1.0)                           # anything extra would arrive now
    finally:
        producing.clear()
        stop.set()
        sender.join(10)
    counts = repository.indices()
    missing = sorted(set(range(total)) - set(counts))
    # RFC 5425 has no acknowledgements: an event written to the connection as the repository
    # stopped may be read and then dropped by the repository itself (README, compliance.atna
    # say so). Only such an event may be missing; anything else missing is the forwarder's loss.
    outbox = sqlite3.connect(f"file:{NodePaths(node).audit_db.parent / OUTBOX_FILE}?mode=ro", uri=True)
    try:
        sent_at = dict(outbox.execute("SELECT idx, delivered_at FROM outbox").fetchall())
    finally:
        outbox.close()
    in_flight_at_stop = {i for i, at in sent_at.items()
                         if at is not None and stop_began - 1.0 <= at <= stop_ended + 0.5}
    assert set(missing) <= in_flight_at_stop and len(missing) <= 2, (missing, sorted(in_flight_at_stop), lines)
    assert sorted(counts) == [i for i in range(total) if i not in missing]
    assert set(counts.values()) == {1}, {i: n for i, n in counts.items() if n != 1}
    assert any("closed the connection" in line or "reset" in line for line in lines), lines

    # each message is the entry's BALP AuditEvent, with the entry's Merkle leaf hash
    from fhir.resources.R4B.auditevent import AuditEvent

    raw = dict(read_raw_log(NodePaths(node).audit_db).entries)
    text = repository.out.read_text(encoding="utf-8").splitlines()
    order = []
    for line in text:
        match = SD.search(line)
        assert match is not None, line
        index = int(match.group(2))
        order.append(index)
        assert match.group(1) == "silo:st-marys"
        assert match.group(3) == leaf_hash(raw[index]).hex()
        event = json.loads(line[match.end():].strip())
        AuditEvent.model_validate(event)
        assert event["id"] == f"entry-{index}"
    assert order == sorted(order)                 # delivered in entry order
    release = json.loads(text[1][SD.search(text[1]).end():])  # type: ignore[union-attr]
    assert release["meta"]["profile"][0].endswith("IHE.BasicAudit.PrivacyDisclosure.Source")


def test_a_restarted_forwarder_resumes_without_resending(tmp_path: Path, pki: dict[str, Path],
                                                         repository: Rsyslog) -> None:
    node = tmp_path / "node"
    with open_log(node) as log:
        _record(log, 5, 0)
    first = Forwarder(node, _target(repository.port, pki))
    first.step()
    first.close()
    with open_log(node) as log:
        _record(log, 4, 5)
    second = Forwarder(node, _target(repository.port, pki))
    second.step()
    second.close()
    assert _wait(lambda: sum(repository.indices().values()) >= 9)
    time.sleep(0.5)
    assert repository.indices() == Counter(range(9))


def test_a_repository_with_a_certificate_from_another_ca_gets_nothing(
    tmp_path: Path, pki: dict[str, Path]
) -> None:
    """A rogue listener on the repository's address (certificate for the right name, but from
    another CA) must not receive the events: the TLS handshake fails and they stay queued."""
    received = bytearray()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(pki["rogue_cert"]), str(pki["rogue_key"]))
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve() -> None:
        listener.settimeout(10)
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            raw_conn = conn
            try:
                tls = context.wrap_socket(raw_conn, server_side=True)
                while chunk := tls.recv(65536):
                    received.extend(chunk)
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    node = tmp_path / "node"
    with open_log(node) as log:
        _record(log, 3, 0)
    lines: list[str] = []
    forwarder = Forwarder(node, _target(port, pki), status=lines.append)
    assert forwarder.step() == 0
    assert forwarder.outbox.counts() == (3, 0)
    forwarder.close()
    thread.join(10)
    listener.close()
    assert not received
    assert any("certificate was not accepted" in line for line in lines), lines


def test_the_outbox_belongs_to_one_repository(tmp_path: Path, pki: dict[str, Path]) -> None:
    node = tmp_path / "node"
    with open_log(node) as log:
        _record(log, 1, 0)
    Forwarder(node, _target(_free_port(), pki)).close()
    with pytest.raises(OutboxDestinationChanged, match="queues events for localhost"):
        Forwarder(node, SyslogTarget("elsewhere.example", 6514, pki["ca"]))


def test_forward_command_once(tmp_path: Path, pki: dict[str, Path], repository: Rsyslog,
                              capsys: pytest.CaptureFixture[str]) -> None:
    """`compliance forward --once`: exit 0 when everything was delivered, 4 (events kept
    queued) when the repository is unreachable, 3 with a coded message for a bad CA file."""
    from compliance.cli.main import main

    node = tmp_path / "node"
    with open_log(node) as log:
        _record(log, 4, 0)
    common = ["forward", "--node", str(node), "--ca", str(pki["ca"]),
              "--cert", str(pki["client_cert"]), "--key", str(pki["client_key"]), "--once"]
    assert main(common + ["--to", f"localhost:{repository.port}"]) == 0
    out = capsys.readouterr().out
    assert "4 of 4 events delivered" in out and "closed the connection" not in out, out  # its own close
    # The outage starts once the repository has written what it read: a stop before that drops
    # rsyslog's in-memory queue, the receiver-side loss the module docstring states (under load
    # this test lost events 0..3 that way).
    assert _wait(lambda: sum(repository.indices().values()) >= 4)
    repository.stop()
    with open_log(node) as log:
        _record(log, 2, 4)
    assert main(common + ["--to", f"localhost:{repository.port}"]) == 4
    out = capsys.readouterr().out
    assert "connection refused" in out and "4 of 6 events delivered" in out
    assert main(["forward", "--node", str(node), "--ca", str(tmp_path / "missing.pem"),
                 "--to", f"localhost:{repository.port}", "--once"]) == 3
    assert "SYSLOG_CONFIG_INVALID" in capsys.readouterr().err
    repository.start()
    assert main(common + ["--to", f"localhost:{repository.port}"]) == 0
    assert _wait(lambda: sum(repository.indices().values()) >= 6)
    time.sleep(0.5)
    assert repository.indices() == Counter(range(6))


class _SlowRepository:
    """A TLS syslog receiver (Python's ssl, the hospital CA, client certificates required) that
    waits `read_after_s` before it reads, then reads to the end of the stream and, unless
    `hold_open`, closes: what a busy repository looks like to a sender that is about to exit."""

    def __init__(self, pki: dict[str, Path], read_after_s: float, hold_open: bool = False) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(pki["server_cert"], pki["server_key"])
        self.context.load_verify_locations(pki["ca"])
        self.context.verify_mode = ssl.CERT_REQUIRED
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.read_after_s, self.hold_open = read_after_s, hold_open
        self.received = bytearray()
        self.read_everything = threading.Event()
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        raw, _ = self.listener.accept()
        with self.context.wrap_socket(raw, server_side=True) as conn:
            time.sleep(self.read_after_s)
            while True:
                try:
                    data = conn.recv(65536)
                except ssl.SSLError:
                    data = b""
                if not data:
                    break
                self.received.extend(data)
            self.read_everything.set()
            if self.hold_open:
                self.release.wait(30)
        self.listener.close()

    def frames(self) -> int:
        return len(re.findall(rb"\[healthfed@32473 ", bytes(self.received)))


def test_once_gives_a_busy_repository_time_to_read_before_it_exits(
        tmp_path: Path, pki: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    """RFC 5425 has no acknowledgements: a sender that writes and exits cannot tell whether a busy
    repository read its last frames, and one stopped right after loses them, marked delivered.
    `--once` ends the stream and waits for the repository's close (here it starts reading a second
    after the last write), so it exits only once the repository has read them. Not an
    acknowledgement: see the module docstring."""
    from compliance.cli.main import main

    node = tmp_path / "node"
    with open_log(node) as log:
        _record(log, 4, 0)
    repository = _SlowRepository(pki, read_after_s=1.0)
    assert main(["forward", "--node", str(node), "--to", f"localhost:{repository.port}", "--ca", str(pki["ca"]),
                 "--cert", str(pki["client_cert"]), "--key", str(pki["client_key"]), "--once"]) == 0
    assert repository.read_everything.is_set() and repository.frames() == 4, repository.frames()
    out = capsys.readouterr().out
    assert "4 of 4 events delivered" in out and "closed the connection" not in out, out


def test_events_whose_reading_the_repository_never_confirms_stay_queued(tmp_path: Path, pki: dict[str, Path]) -> None:
    """A repository that does not close after the end of the stream has not shown that it read
    the last frames: they are queued again (a duplicate it can drop, rather than a gap)."""
    node = tmp_path / "node"
    with open_log(node) as log:
        _record(log, 3, 0)
    repository = _SlowRepository(pki, read_after_s=0.0, hold_open=True)
    lines: list[str] = []
    # unconfirmed_s: a loaded machine must not age the three rows out of the window before the wait
    forwarder = Forwarder(node, _target(repository.port, pki), linger_s=0.5, unconfirmed_s=60, status=lines.append)
    try:
        assert forwarder.step() == 3
        forwarder.disconnect()
        assert forwarder.outbox.counts() == (3, 0), lines
        assert any("did not close the connection within 0.5 s of its end: the last 3 events stay queued"
                   in line for line in lines), lines
    finally:
        repository.release.set()
        forwarder.close()


def test_a_stop_interrupted_while_waiting_keeps_the_unconfirmed_events_queued(
        tmp_path: Path, pki: dict[str, Path]) -> None:
    """Ctrl-C (here: a signal whose handler raises) during the wait for the repository's close:
    the rows written just before are not confirmed, so they stay queued (a cold review found them
    left marked delivered)."""

    class Interrupted(Exception):
        pass

    def interrupt(_signum, _frame):  # type: ignore[no-untyped-def]
        raise Interrupted()

    node = tmp_path / "node"
    with open_log(node) as log:
        _record(log, 3, 0)
    repository = _SlowRepository(pki, read_after_s=0.0, hold_open=True)
    forwarder = Forwarder(node, _target(repository.port, pki), linger_s=2.0, unconfirmed_s=60)
    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        assert forwarder.step() == 3 and forwarder.outbox.counts() == (3, 3)
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        with pytest.raises(Interrupted):
            forwarder.disconnect()
        assert forwarder.outbox.counts() == (3, 0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        repository.release.set()
        forwarder.close()
