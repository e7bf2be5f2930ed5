"""The silo's only network path: an outbound gRPC channel to the aggregator with mutual
TLS, retried with capped exponential backoff and jitter when the aggregator is unreachable."""

from __future__ import annotations

import logging
import random
import threading
import time
from typing import Any

import grpc

from healthfed_common.startup_kit import SiloConfig
from healthfed_common.wire import codec
from healthfed_common.wire.service import POLL_METHOD, SERVICE_NAME, SUBMIT_METHOD
from silo_node.diagnostics import describe_rpc_error

log = logging.getLogger("healthfed.silo.connection")

# CANCELLED: the aggregator was stopped mid-call (restart, deploy); it will come back.
_RETRYABLE = {
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.CANCELLED,
}


class ConnectionStopped(Exception):
    """The silo was asked to stop while waiting to reach the aggregator."""


class AggregatorRefused(PermissionError):
    """The aggregator refused this silo (revoked, not enrolled, identity mismatch...)."""


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
                ("grpc.max_receive_message_length", codec.MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", codec.MAX_MESSAGE_BYTES),
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
                return codec.decode(method(codec.encode(message), timeout=self._timeout))
            except grpc.RpcError as error:
                status = error.code()
                if status in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
                    raise AggregatorRefused(error.details() or str(status)) from None
                if status not in _RETRYABLE or (retry_until is not None and time.time() >= retry_until):
                    raise
                sleep = min(delay, self._max_backoff) * random.uniform(0.5, 1.0)
                log.info("aggregator unreachable: %s [%s]; retrying in %.1fs",
                         describe_rpc_error(error, self._address, self._tls_name), status.name, sleep)
                if self._stop.wait(sleep):  # SIGTERM during a long outage ends the wait at once
                    raise ConnectionStopped("stopped while the aggregator was unreachable")
                delay *= 2

    def poll(self, message: Any, retry_until: float | None = None) -> Any:
        return self._call(self._poll, message, retry_until=retry_until)

    def submit(self, message: Any, retry_until: float | None = None) -> Any:
        return self._call(self._submit, message, retry_until=retry_until)
