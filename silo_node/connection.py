"""The silo's only network path: an outbound gRPC channel to the aggregator with mutual
TLS, retried with capped exponential backoff and jitter when the aggregator is unreachable.

The aggregator is not trusted to send well-formed bytes: a response is decoded with a size
bound (`MAX_RESPONSE_BYTES`) and a malformed one becomes a coded log line and a Wait (for a
poll) or a refused Ack (for a submission), never a crash carrying Python exception text.
A request the aggregator refuses as malformed or too large is not retried: sending the same
bytes again cannot succeed."""

from __future__ import annotations

import logging
import os
import random
import re
import threading
import time
from typing import Any

# A gRPC client channel advances a connection attempt (TCP, then each leg of the TLS and HTTP/2
# handshakes) only while some thread polls it. While the aggregator is down the silo's calls fail
# at once and it sleeps between them, so nothing polls but C-core's backup poller, every 5 s by
# default: a silo started before its aggregator came up connected 5-19 s after the aggregator was
# listening (measured on loopback; each handshake leg waited for the next backup poll). Polling
# every 100 ms costs one epoll_wait per 100 ms and lets the silo connect within a fraction of a
# second. C-core reads it once, when the process makes its first channel or server, so it is
# set here, on import, before this module makes the silo's channel (nothing in `silo-node run`
# makes one earlier); hospital IT can still set its own value (gRPC's documented variable).
BACKUP_POLL_INTERVAL_MS = "100"
os.environ.setdefault("GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS", BACKUP_POLL_INTERVAL_MS)

import grpc  # noqa: E402  (beside the variable it depends on)

from healthfed_common.errors import WireFormatError
from silo_node.errors import SiloNodeError
from healthfed_common.startup_kit import SiloConfig
from healthfed_common.wire import codec
from healthfed_common.wire.messages import Ack, Wait
from healthfed_common.wire.service import POLL_METHOD, SERVICE_NAME, SUBMIT_METHOD
from silo_node.diagnostics import describe_rpc_error

log = logging.getLogger("healthfed.silo.connection")

# CANCELLED: the aggregator was stopped mid-call (restart, deploy); it will come back.
_RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.CANCELLED,
}


MAX_RESPONSE_BYTES = 256 * 1024 * 1024
"""The largest response a silo decodes (and gRPC receives): a task carries the model, which
is far smaller for every model in the registry."""
_MAX_REQUEST_BYTES = codec.MAX_MESSAGE_BYTES
_MALFORMED_RETRY_S = 5.0
_CODED = re.compile(r"^([A-Z][A-Z0-9_]{1,63}): ")


class ConnectionStopped(SiloNodeError):
    """The silo was asked to stop while waiting to reach the aggregator."""


class AggregatorRefused(SiloNodeError, PermissionError):
    """The aggregator refused this silo (revoked, not enrolled, identity mismatch...)."""


class MessageRefused(SiloNodeError, ValueError):
    """The aggregator refused a request as malformed or too large (not worth a retry)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _refusal(error: grpc.RpcError) -> MessageRefused:
    """The aggregator's coded detail, cut short and on one line (it is logged, not trusted)."""
    details = (error.details() or "").replace("\n", " ")[:300]
    match = _CODED.match(details)
    return MessageRefused(match.group(1) if match else "AGGREGATOR_REFUSED_MESSAGE", details)


class AggregatorConnection:
    def __init__(self, config: SiloConfig, call_timeout_s: float | None = None, stop: threading.Event | None = None) -> None:
        """`call_timeout_s` defaults to the kit's `call_timeout_s`."""
        self._stop = stop or threading.Event()
        # gRPC reconnects a broken channel with its own backoff (up to 120 s by default); cap it
        # like ours, so a silo whose network comes back reconnects within max_backoff_s.
        reconnect_ms = max(100, int(config.max_backoff_s * 1000))
        credentials = grpc.ssl_channel_credentials(
            root_certificates=config.tls.ca_certificate.read_bytes(),
            private_key=config.tls.private_key.read_bytes(),
            certificate_chain=config.tls.certificate.read_bytes(),
        )
        self._channel = grpc.secure_channel(
            config.aggregator_address,
            credentials,
            options=[
                ("grpc.ssl_target_name_override", config.aggregator_tls_name),
                ("grpc.max_receive_message_length", MAX_RESPONSE_BYTES),
                ("grpc.max_send_message_length", _MAX_REQUEST_BYTES),
                # (not grpc.min_reconnect_backoff_ms: C-core uses it as the connect timeout too)
                ("grpc.initial_reconnect_backoff_ms", min(1000, reconnect_ms)),
                ("grpc.max_reconnect_backoff_ms", reconnect_ms),
            ],
        )
        self._poll = self._channel.unary_unary(f"/{SERVICE_NAME}/{POLL_METHOD}")
        self._submit = self._channel.unary_unary(f"/{SERVICE_NAME}/{SUBMIT_METHOD}")
        self._timeout = config.call_timeout_s if call_timeout_s is None else call_timeout_s
        self._max_backoff = config.max_backoff_s
        self._address, self._tls_name = config.aggregator_address, config.aggregator_tls_name

    def close(self) -> None:
        self._channel.close()

    def _call(self, method: Any, message: Any, *, retry_until: float | None) -> Any:
        delay = 0.5
        while True:
            if self._stop.is_set():
                raise ConnectionStopped("stopped")
            try:
                response = method(codec.encode(message), timeout=self._timeout)
            except grpc.RpcError as error:
                status = error.code()
                if status in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
                    raise AggregatorRefused(error.details() or str(status)) from None
                refused = _refusal(error)
                if status == grpc.StatusCode.INVALID_ARGUMENT or refused.code == "MESSAGE_TOO_LARGE":
                    raise refused from None
                if status not in _RETRYABLE or (retry_until is not None and time.time() >= retry_until):
                    raise
                sleep = min(delay, self._max_backoff) * random.uniform(0.5, 1.0)
                log.info("aggregator unreachable: %s [%s]; retrying in %.1fs",
                         describe_rpc_error(error, self._address, self._tls_name), status.name, sleep)
                if self._stop.wait(sleep):  # SIGTERM during a long outage ends the wait at once
                    raise ConnectionStopped("stopped while the aggregator was unreachable")
                delay *= 2
                continue
            return codec.decode(response, max_bytes=MAX_RESPONSE_BYTES)

    def poll(self, message: Any, retry_until: float | None = None) -> Any:
        """The aggregator's answer, or a Wait when it was malformed or our poll was refused
        as malformed (logged with its code; polling again later is all a silo can do)."""
        try:
            return self._call(self._poll, message, retry_until=retry_until)
        except WireFormatError as error:
            log.error("%s: the aggregator's response to a poll is not a valid HealthFed message (%s); "
                      "polling again in %.0fs", error.code, error, _MALFORMED_RETRY_S)
            return Wait(_MALFORMED_RETRY_S, f"{error.code}: malformed response from the aggregator")
        except MessageRefused as refused:
            log.error("%s: the aggregator refused this silo's poll: %s", refused.code, refused)
            return Wait(_MALFORMED_RETRY_S, f"{refused.code}: poll refused by the aggregator")

    def submit(self, message: Any, retry_until: float | None = None) -> Any:
        """The aggregator's Ack, or a refused Ack carrying the code when its response was
        malformed or it refused the submission as malformed or too large."""
        try:
            return self._call(self._submit, message, retry_until=retry_until)
        except WireFormatError as error:
            log.error("%s: the aggregator's response to a %s is not a valid HealthFed message (%s)",
                      error.code, type(message).__name__, error)
            return Ack(False, error.code, "the aggregator's response was not a valid HealthFed message")
        except MessageRefused as refused:
            log.error("%s: the aggregator refused this silo's %s: %s", refused.code, type(message).__name__, refused)
            return Ack(False, refused.code, "the aggregator refused the submission")
