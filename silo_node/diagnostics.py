"""What is wrong between this silo and its aggregator, in words hospital IT can act on.

Two users: `silo-node check` (every step from the kit's files to an HTTP/2 answer over
mutual TLS, one OK/WARN/FAIL line each with the fix), and the polling loop, whose retry log
line names the address and the cause (`describe_rpc_error`) instead of a bare UNAVAILABLE.

Nothing here sends data: the deepest probe is a TLS handshake with the kit's own
certificate followed by the HTTP/2 connection preface, which a gRPC server answers with its
SETTINGS frame before any HealthFed message is exchanged.
"""

from __future__ import annotations

import datetime as dt
import re
import socket
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from healthfed_common.errors import HealthFedError
from silo_node.errors import SiloNodeError
from healthfed_common.startup_kit import SiloConfig, load_silo_config

OK, WARN, FAIL = "OK", "WARN", "FAIL"
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + empty SETTINGS
_SETTINGS_FRAME = 0x4
_SKEW_WARN = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class Check:
    """One diagnostic step: `status` OK/WARN/FAIL, what was found, and what to do."""

    name: str
    status: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:<4} {self.name}: {self.detail}"
        return f"{text}\n     fix: {self.fix}" if self.fix else text


def split_address(address: str) -> tuple[str, int]:
    """`host:port` or `[v6]:port` -> (host, port); ValueError with a reason otherwise."""
    match = re.fullmatch(r"\[([^\]]+)\]:(\d+)|([^:\[\]]+):(\d+)", address.strip())
    if not match:
        raise ValueError(f"{address!r} is not host:port")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range")
    return host, port


# --- the polling loop's log line -------------------------------------------------------

_CAUSES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"DNS resolution failed|Domain name not found|Name or service not known|not resolve", re.I),
     "DNS name {host!r} does not resolve (check aggregator_address in silo.yaml and this host's DNS)"),
    (re.compile(r"Connection refused", re.I),
     "connection refused at {address} (is the aggregator running and listening on that port?)"),
    (re.compile(r"unable to get local issuer|self.signed|unknown ca", re.I),
     "TLS handshake with {address} failed: its certificate is not signed by this kit's CA (wrong CA, or "
     "not this federation's aggregator)"),
    (re.compile(r"certificate (has )?expired|CERTIFICATE_EXPIRED|not yet valid", re.I),
     "TLS handshake with {address} failed: a certificate is expired or not yet valid (check both "
     "certificates' dates and this host's clock; `silo-node check` says which)"),
    (re.compile(r"CERTIFICATE_VERIFY_FAILED|certificate verify failed", re.I),
     "TLS handshake with {address} failed: the aggregator's certificate did not verify with this kit's CA "
     "(wrong CA, expired, or this host's clock is off; `silo-node check` says which)"),
    (re.compile(r"Peer name|hostname|subject alt|SAN", re.I),
     "TLS handshake with {address} failed: its certificate is not for {tls_name!r}"),
    (re.compile(r"Ssl handshake failed|SSL_ERROR|handshake|tls", re.I),
     "TLS handshake with {address} failed (wrong CA, or this silo's certificate refused; run `silo-node check`)"),
    (re.compile(r"No route to host|Network is unreachable|unreachable", re.I),
     "no network route to {address} (firewall, proxy or routing)"),
    (re.compile(r"timed out|Timeout|Deadline", re.I),
     "no answer from {address} in time (firewall dropping packets, or the aggregator is overloaded)"),
    (re.compile(r"Socket closed|Connection reset|GOAWAY|EOF", re.I),
     "{address} closed the connection (the aggregator restarted, or refused this silo's certificate)"),
)


def describe_connection_failure(details: str, code_name: str, address: str, tls_name: str) -> str:
    """A gRPC failure's detail text as a cause naming the address. Never raises."""
    try:
        host = split_address(address)[0]
    except ValueError:
        return f"aggregator_address {address!r} is not host:port (fix it in silo.yaml)"
    if code_name == "DEADLINE_EXCEEDED" and not details.strip():
        details = "deadline"
    for pattern, text in _CAUSES:
        if pattern.search(details):
            return text.format(host=host, address=address, tls_name=tls_name)
    return f"{address} unreachable ({code_name})"


def describe_rpc_error(error: grpc.RpcError, address: str, tls_name: str) -> str:
    """`describe_connection_failure` for a raised gRPC error (the polling loop's log line)."""
    try:
        code = error.code()
        details = error.details() or ""
    except Exception:  # noqa: BLE001 - an RpcError without call state: still say where
        return f"{address} unreachable"
    return describe_connection_failure(details, getattr(code, "name", str(code)), address, tls_name)


# --- silo-node check ---------------------------------------------------------------------

def load_kit(path: Path) -> tuple[SiloConfig | None, Check]:
    """The kit's silo.yaml, or why it cannot be used (a folder, a missing or unreadable file,
    invalid YAML or keys)."""
    if path.is_dir():
        candidate = path / "silo.yaml"
        hint = f"pass --config {candidate}" if candidate.is_file() else "pass the kit's silo.yaml file"
        return None, Check("config", FAIL, f"{path} is a folder, not silo.yaml", hint)
    if not path.exists():
        return None, Check("config", FAIL, f"{path} does not exist", "check the path to the kit's silo.yaml")
    try:
        config = load_silo_config(path)
    except (HealthFedError, OSError, ValueError) as error:
        reason = getattr(error, "strerror", None) or str(error)
        return None, Check("config", FAIL, f"cannot use {path}: {reason}",
                           "restore silo.yaml from the kit the coordinator sent, then correct it")
    return config, Check("config", OK, f"{path} (silo {config.silo_id}, federation {config.federation})")


def _private(path: Path) -> bool:
    return not stat.S_IMODE(path.stat().st_mode) & 0o077


def check_files(config: SiloConfig) -> list[Check]:
    """Each kit file exists and is readable; private keys are 0600 (owner only)."""
    checks: list[Check] = []
    files = [("CA certificate", config.tls.ca_certificate, False), ("certificate", config.tls.certificate, False),
             ("TLS private key", config.tls.private_key, True), ("signing key", config.signing_key, True)]
    for label, path, secret in files:
        name = f"kit file ({label})"
        if not path.exists():
            fix = "run `silo-node enrol` to create it" if secret or label == "certificate" else "copy it from the kit"
            checks.append(Check(name, FAIL, f"{path} does not exist", f"{fix}, or correct its path in silo.yaml"))
        elif not path.is_file():
            checks.append(Check(name, FAIL, f"{path} is not a file", "point silo.yaml at the file itself"))
        else:
            try:
                path.read_bytes()
            except OSError as error:
                checks.append(Check(name, FAIL, f"{path} cannot be read ({error.strerror})",
                                    "run silo-node as the account that owns the kit, or fix the file's owner"))
                continue
            if secret and not _private(path):
                mode = stat.S_IMODE(path.stat().st_mode)
                checks.append(Check(name, FAIL, f"{path} has mode {mode:04o}: other accounts can read this key",
                                    f"chmod 600 {path}"))
            else:
                checks.append(Check(name, OK, str(path)))
    state = config.state_dir
    if state.exists() and not state.is_dir():
        checks.append(Check("state folder", FAIL, f"{state} exists but is not a folder", "correct state_dir in silo.yaml"))
    elif not state.exists():
        checks.append(Check("state folder", WARN, f"{state} does not exist yet",
                            "it is created by the first `silo-node data add --config` or `silo-node run`"))
    else:
        checks.append(Check("state folder", OK, str(state)))
    return checks


def _load_certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def _common_name(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else ""


def _when(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def validity_problem(certificate: x509.Certificate, now: dt.datetime) -> str | None:
    """Why a certificate is not valid now (expired / not yet valid, with dates), or None."""
    if now < certificate.not_valid_before_utc:
        ahead = certificate.not_valid_before_utc - now
        return (f"not valid before {_when(certificate.not_valid_before_utc)}, but this host's clock says "
                f"{_when(now)} ({_duration(ahead)} earlier)")
    if now > certificate.not_valid_after_utc:
        return f"expired on {_when(certificate.not_valid_after_utc)} (now {_when(now)})"
    return None


def _duration(delta: dt.timedelta) -> str:
    seconds = int(abs(delta.total_seconds()))
    if seconds >= 86400:
        return f"{seconds // 86400} d {seconds % 86400 // 3600} h"
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 60} min {seconds % 60} s"


def check_certificates(config: SiloConfig, now: dt.datetime | None = None) -> list[Check]:
    """The kit's certificates parse, are valid now, the silo's is issued by the kit's CA for
    CN = silo id, and the private key belongs to it."""
    now = now or dt.datetime.now(dt.timezone.utc)
    checks: list[Check] = []
    try:
        ca = _load_certificate(config.tls.ca_certificate)
    except (OSError, ValueError):
        return [Check("CA certificate", FAIL, f"{config.tls.ca_certificate} is missing or not a PEM certificate",
                      "copy ca.pem from the kit the coordinator sent")]
    problem = validity_problem(ca, now)
    checks.append(Check("CA certificate", FAIL if problem else OK, problem or f"{_common_name(ca)}, valid until "
                        f"{_when(ca.not_valid_after_utc)}", "ask the coordinator for the federation's current CA"
                        if problem else ""))
    try:
        mine = _load_certificate(config.tls.certificate)
    except (OSError, ValueError):
        checks.append(Check("certificate", FAIL, f"{config.tls.certificate} is missing or not a PEM certificate",
                            "run `silo-node enrol`, send the request to the coordinator and install what comes back"))
        return checks
    problem = validity_problem(mine, now)
    if problem:
        fix = ("if the date is right, this host's clock is wrong: fix NTP" if now < mine.not_valid_before_utc else
               "ask the coordinator for a new certificate (`silo-node enrol`)")
        checks.append(Check("certificate validity", FAIL, problem, fix))
    else:
        left = mine.not_valid_after_utc - now
        status = WARN if left < dt.timedelta(days=14) else OK
        checks.append(Check("certificate validity", status, f"valid until {_when(mine.not_valid_after_utc)} "
                            f"({_duration(left)} left)", "renew it soon (`silo-node enrol`)" if status == WARN else ""))
    try:
        mine.verify_directly_issued_by(ca)
        checks.append(Check("certificate issuer", OK, f"issued by {_common_name(ca)}"))
    except (ValueError, TypeError, InvalidSignature):
        checks.append(Check("certificate issuer", FAIL, f"not issued by the kit's CA ({_common_name(ca)}); "
                            f"issuer is {mine.issuer.rfc4514_string()}",
                            "install the certificate this federation's coordinator issued, or the matching ca.pem"))
    cn = _common_name(mine)
    checks.append(Check("certificate name", OK if cn == config.silo_id else FAIL,
                        f"CN {cn!r}" + ("" if cn == config.silo_id else f" but silo_id is {config.silo_id!r}"),
                        "" if cn == config.silo_id else "use this silo's own kit and certificate"))
    try:
        key = serialization.load_pem_private_key(config.tls.private_key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        checks.append(Check("private key", FAIL, f"{config.tls.private_key} is missing or not an unencrypted PEM key",
                            "run `silo-node enrol` again"))
        return checks
    matches = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) \
        == mine.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    checks.append(Check("private key", OK if matches else FAIL,
                        "matches the certificate" if matches else "does not belong to the certificate",
                        "" if matches else "install the certificate issued for this kit's key (or enrol again)"))
    return checks


def check_network(config: SiloConfig, timeout_s: float = 5.0, now: dt.datetime | None = None) -> list[Check]:
    """DNS, TCP connect, TLS handshake with the aggregator's identity, HTTP/2 answer. Stops
    at the first failing step (the later ones cannot succeed)."""
    address = config.aggregator_address
    try:
        host, port = split_address(address)
    except ValueError as error:
        return [Check("aggregator address", FAIL, str(error), "set aggregator_address: host:port in silo.yaml")]
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return [Check("DNS", FAIL, f"DNS name {host!r} does not resolve",
                      "check aggregator_address in silo.yaml (spelling) and this host's DNS server")]
    addresses = sorted({str(info[4][0]) for info in infos})
    checks = [Check("DNS", OK, f"{host} -> {', '.join(addresses)}")]
    try:
        raw = socket.create_connection((host, port), timeout=timeout_s)
    except ConnectionRefusedError:
        checks.append(Check("TCP", FAIL, f"connection refused at {host}:{port}",
                            "start the aggregator, or correct the port in aggregator_address"))
        return checks
    except (TimeoutError, socket.timeout):
        checks.append(Check("TCP", FAIL, f"no answer from {host}:{port} within {timeout_s:g} s",
                            "a firewall drops the connection: open outbound TCP to that port"))
        return checks
    except OSError as error:
        checks.append(Check("TCP", FAIL, f"cannot connect to {host}:{port} ({error.strerror or 'network error'})",
                            "check routing and firewalls between this host and the aggregator"))
        return checks
    checks.append(Check("TCP", OK, f"connected to {host}:{port}"))
    checks.append(_tls_check(config, raw, host, port, timeout_s, now or dt.datetime.now(dt.timezone.utc)))
    return checks


def _context(config: SiloConfig, verify: bool) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["h2"])
    if verify:
        context.load_verify_locations(cafile=str(config.tls.ca_certificate))
    else:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    context.load_cert_chain(str(config.tls.certificate), str(config.tls.private_key))
    return context


def _peer_certificate(config: SiloConfig, host: str, port: int, timeout_s: float) -> x509.Certificate | None:
    """The aggregator's certificate fetched without verifying it, to say why it failed."""
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as raw, \
                _context(config, verify=False).wrap_socket(raw, server_hostname=config.aggregator_tls_name) as tls:
            der = tls.getpeercert(binary_form=True)
        return x509.load_der_x509_certificate(der) if der else None
    except (OSError, ValueError):
        return None


def _tls_check(config: SiloConfig, raw: socket.socket, host: str, port: int, timeout_s: float,
               now: dt.datetime) -> Check:
    name = f"TLS as {config.aggregator_tls_name}"
    try:
        context = _context(config, verify=True)
    except (OSError, ssl.SSLError, ValueError):
        raw.close()
        return Check(name, FAIL, "the kit's CA, certificate or key cannot be loaded", "fix the kit files listed above")
    try:
        with context.wrap_socket(raw, server_hostname=config.aggregator_tls_name) as tls:
            tls.settimeout(timeout_s)
            peer = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True) or b"")
            tls.sendall(_HTTP2_PREFACE)
            header = tls.recv(9)
    except ssl.SSLCertVerificationError as error:
        return _verification_failure(name, error, config, host, port, timeout_s, now)
    except ssl.SSLError as error:
        reason = error.reason or "handshake failed"
        return Check(name, FAIL, f"the aggregator at {host}:{port} refused this silo's certificate ({reason})",
                     "check the certificate lines above; if they are OK, ask the coordinator whether this silo "
                     "is enrolled and not revoked")
    except (TimeoutError, socket.timeout):
        return Check(name, FAIL, f"{host}:{port} did not complete the TLS handshake within {timeout_s:g} s",
                     "something other than the aggregator listens there (a proxy?), or it is overloaded")
    except OSError as error:
        return Check(name, FAIL, f"{host}:{port} closed the connection during TLS ({error.strerror or 'reset'})",
                     "the aggregator refused this silo's certificate: ask the coordinator whether this silo is "
                     "enrolled and not revoked")
    if len(header) < 9:
        return Check(name, FAIL, f"{host}:{port} accepted TLS but then closed the connection",
                     "the aggregator refused this silo's certificate: ask the coordinator whether this silo is "
                     "enrolled and not revoked")
    if header[3] != _SETTINGS_FRAME:
        return Check(name, FAIL, f"{host}:{port} does not speak HTTP/2 (not a gRPC server)",
                     "correct aggregator_address: another service listens there")
    expires = peer.not_valid_after_utc
    return Check(name, OK, f"aggregator certificate verified for {config.aggregator_tls_name!r} by the kit's CA "
                 f"(valid until {_when(expires)}); mutual TLS accepted, gRPC (HTTP/2) answered")


def _verification_failure(name: str, error: ssl.SSLCertVerificationError, config: SiloConfig, host: str, port: int,
                          timeout_s: float, now: dt.datetime) -> Check:
    """Why the aggregator's certificate did not verify: expired, not yet valid (clock skew),
    another CA, or another name."""
    peer = _peer_certificate(config, host, port, timeout_s)
    where = f"the aggregator certificate at {host}:{port}"
    if error.verify_code == 10 or (peer is not None and now > peer.not_valid_after_utc):
        expired = _when(peer.not_valid_after_utc) if peer else "an earlier date"
        return Check(name, FAIL, f"{where} expired on {expired} (this host's clock: {_when(now)})",
                     "the coordinator must renew the aggregator's certificate; if that date is still ahead, "
                     "this host's clock is wrong: fix NTP")
    if error.verify_code == 9 or (peer is not None and now < peer.not_valid_before_utc):
        if peer is not None:
            skew = peer.not_valid_before_utc - now
            detail = (f"{where} is not yet valid: it starts at {_when(peer.not_valid_before_utc)}, this host's clock "
                      f"says {_when(now)}, {_duration(skew)} earlier")
        else:
            detail = f"{where} is not yet valid by this host's clock ({_when(now)})"
        return Check(name, FAIL, detail, "this host's clock is probably behind: synchronise it (NTP), then retry")
    if error.verify_code in (2, 18, 19, 20, 21):
        issuer = peer.issuer.rfc4514_string() if peer is not None else "an unknown issuer"
        return Check(name, FAIL, f"{where} is not signed by this kit's CA (it is issued by {issuer}): wrong CA, "
                     "or not this federation's aggregator", "use the ca.pem of this federation's kit, and check "
                     "aggregator_address")
    if error.verify_code == 62 or "hostname" in (error.verify_message or "").lower():
        return Check(name, FAIL, f"{where} is not for {config.aggregator_tls_name!r}",
                     "check aggregator_address and aggregator_tls_name in silo.yaml (normally healthfed-aggregator)")
    return Check(name, FAIL, f"{where} did not verify ({error.verify_message})",
                 "ask the coordinator to check the aggregator's certificate")


def run_checks(config_path: Path, timeout_s: float = 5.0, now: dt.datetime | None = None) -> list[Check]:
    """Every check in order; network checks only when the kit itself is usable."""
    config, loaded = load_kit(config_path)
    if config is None:
        return [loaded]
    checks = [loaded, *check_files(config), *check_certificates(config, now)]
    if any(c.status == FAIL for c in checks):
        return [*checks, Check("network", WARN, "not tested: fix the lines marked FAIL first")]
    return [*checks, *check_network(config, timeout_s, now)]


class KitInvalid(SiloNodeError, ValueError):
    """A file the kit names is missing, not a file, or unreadable."""

    code = "KIT_INVALID"


def require_kit_files(config: SiloConfig) -> None:
    """Raises KitInvalid naming every TLS file of the kit that cannot be read, so that
    `silo-node run` refuses with the fix instead of failing deep inside gRPC set-up."""
    problems: list[str] = []
    for label, path in (("tls.ca_certificate", config.tls.ca_certificate), ("tls.certificate", config.tls.certificate),
                        ("tls.private_key", config.tls.private_key)):
        if not path.exists():
            problems.append(f"{label} {path} does not exist")
        elif not path.is_file():
            problems.append(f"{label} {path} is not a file")
        else:
            try:
                path.read_bytes()
            except OSError as error:
                problems.append(f"{label} {path} cannot be read ({error.strerror})")
    if problems:
        raise KitInvalid("; ".join(problems) + " (correct the path in silo.yaml, or run `silo-node check`)")
