"""The aggregator's gRPC endpoint: mutual TLS with the federation CA, and per-call checks
in an order that keeps refusals cheap. Every call, before its bytes are parsed:

1. the caller's certificate (from the TLS handshake) is not revoked and names an enrolled
   silo -- nothing from an unauthenticated or revoked peer is ever decoded;
2. the request fits the method's limit: a Poll is tiny, a Submit is at most the largest
   answer the running plan can produce (`set_submit_limit`, from `aggregator.limits`); gRPC's
   own receive limit (aggregator.yaml `max_message_bytes`) caps both.

Then the message is decoded (with the same bound), must claim the silo id of the
certificate, and every secure-aggregation message inside must name that silo as its sender.
Every refusal goes to the caller as `CODE: message written here`, never exception text, and
to the refusal hook (metrics and audit log)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from concurrent import futures
from typing import Any, NoReturn

import grpc

from aggregator.config import AggregatorConfig
from aggregator.pki import certificate_serial_hex
from aggregator.state_store import StateBackend
from aggregator.task_board import TaskBoard
from healthfed_common.errors import WireFormatError
from healthfed_common.wire import codec
from healthfed_common.wire.messages import (
    Ack,
    AggregatorCheckpoint,
    AuditCheckpoint,
    EvaluateResult,
    PollRequest,
    Refusal,
    SecAggReply,
    TrainResult,
)
from healthfed_common.wire.service import POLL_METHOD, SERVICE_NAME, SUBMIT_METHOD

log = logging.getLogger("healthfed.aggregator.server")

RefusalHook = Callable[[str, str, str], None]
CheckpointExchange = Callable[[str, AuditCheckpoint], "Ack | AggregatorCheckpoint"]

POLL_LIMIT_BYTES = 16 * 1024
"""A PollRequest is a silo id and a version string (~100 bytes encoded)."""
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""gRPC's receive limit when aggregator.yaml does not set `max_message_bytes`."""

_SUBMITTED = (TrainResult, EvaluateResult, Refusal, AuditCheckpoint, SecAggReply)


class FederationService:
    def __init__(
        self,
        board: TaskBoard,
        store: StateBackend,
        enrolled: frozenset[str],
        on_refused_connection: RefusalHook | None = None,
        witness: CheckpointExchange | None = None,
        metrics: Any = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        """`max_message_bytes`: the transport's hard cap (start_server sets it from
        aggregator.yaml); the Submit limit stays at it until a plan sets its own.
        `witness` answers a silo's checkpoint (aggregator.audit.AggregatorAudit.exchange: a
        refusal, or this aggregator's own checkpoint for the silo to witness in turn)."""
        self._witness = witness
        self._metrics = metrics
        self._board = board
        self._store = store
        self._enrolled = enrolled
        self._on_refused = on_refused_connection or (lambda *_: None)
        self._hard_cap = max_message_bytes
        self._submit_limit = max_message_bytes

    # -- limits ---------------------------------------------------------------------------
    @property
    def hard_cap_bytes(self) -> int:
        return self._hard_cap

    @property
    def submit_limit_bytes(self) -> int:
        return self._submit_limit

    def set_hard_cap(self, max_message_bytes: int) -> None:
        """The transport's receive limit; a Submit limit above it is lowered to it."""
        if max_message_bytes < POLL_LIMIT_BYTES:
            raise ValueError(f"max_message_bytes must be at least {POLL_LIMIT_BYTES}")
        self._hard_cap = max_message_bytes
        self._submit_limit = min(self._submit_limit, max_message_bytes)

    def set_submit_limit(self, limit_bytes: int) -> int:
        """Called by whoever starts a plan, with the largest answer that plan can produce
        (`aggregator.limits.submit_limit_bytes`). Returns the limit in force: a plan whose
        answers exceed the transport's cap is logged as an error (its silos' results would be
        refused), since the cap is the operator's decision, not the plan's."""
        if limit_bytes < POLL_LIMIT_BYTES:
            raise ValueError(f"a Submit limit below {POLL_LIMIT_BYTES} bytes would refuse every answer")
        if limit_bytes > self._hard_cap:
            log.error("SUBMIT_LIMIT_ABOVE_CAP: the plan's largest answer may need %d bytes but "
                      "max_message_bytes in aggregator.yaml is %d; raise it or silos' results will be refused",
                      limit_bytes, self._hard_cap)
        self._submit_limit = min(limit_bytes, self._hard_cap)
        return self._submit_limit

    # -- checks, in the order they run --------------------------------------------------
    def _refuse(self, context: grpc.ServicerContext, status: grpc.StatusCode, who: str, code: str,
                message: str) -> NoReturn:
        log.warning("refused %s: %s (%s)", who, message, code)
        self._on_refused(who, code, message)
        context.abort(status, f"{code}: {message}")
        raise AssertionError("grpc context.abort returned")  # abort always raises

    def _authenticate(self, context: grpc.ServicerContext) -> str:
        """The silo id of the caller's certificate, once it is known not revoked and enrolled.
        Runs before the request is looked at."""
        auth = context.auth_context()
        names = auth.get("x509_common_name") or []
        pems = auth.get("x509_pem_cert") or []
        if not names or not pems:
            self._refuse(context, grpc.StatusCode.UNAUTHENTICATED, "unknown", "NO_CLIENT_CERTIFICATE",
                         "a client certificate is required")
        identity: str = names[0].decode("utf-8", errors="replace")
        serial = certificate_serial_hex(pems[0])
        if self._store.is_revoked(serial):
            self._refuse(context, grpc.StatusCode.PERMISSION_DENIED, identity, "CERTIFICATE_REVOKED",
                         f"certificate {serial} of {identity} has been revoked")
        if identity not in self._enrolled:
            self._refuse(context, grpc.StatusCode.PERMISSION_DENIED, identity, "NOT_ENROLLED",
                         f"{identity} is not enrolled in this federation")
        return identity

    def _decode(self, request: bytes, context: grpc.ServicerContext, identity: str, method: str,
                limit: int) -> Any:
        if len(request) > limit:
            self._refuse(context, grpc.StatusCode.RESOURCE_EXHAUSTED, identity, "MESSAGE_TOO_LARGE",
                         f"a {method} request of {len(request)} bytes exceeds this aggregator's limit of {limit} bytes")
        try:
            return codec.decode(request, max_bytes=limit)
        except WireFormatError as error:
            # codec messages are fixed text written there (sizes and our own type names only)
            self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, identity, error.code,
                         f"the {method} request is not a valid HealthFed message: {error}")

    def _check_claims(self, context: grpc.ServicerContext, identity: str, message: Any) -> None:
        claimed = message.silo_id
        if claimed != identity:
            shown = claimed if isinstance(claimed, str) and len(claimed) <= 64 else "another silo"
            self._refuse(context, grpc.StatusCode.PERMISSION_DENIED, identity, "IDENTITY_MISMATCH",
                         f"certificate is for {identity!r} but the message claims {shown!r}")
        secagg = message.payload if isinstance(message, SecAggReply) else getattr(message, "secagg", None)
        for sender in _senders(secagg):
            if sender != identity:
                self._refuse(context, grpc.StatusCode.PERMISSION_DENIED, identity, "SECAGG_SENDER_MISMATCH",
                             f"a secure-aggregation message from {identity!r} names another silo as its sender")

    def _count(self, request: bytes, silo_id: str, reply: bytes) -> bytes:
        if self._metrics is not None:
            self._metrics.bytes_in(len(request))
            self._metrics.silo_seen(silo_id)
            self._metrics.bytes_out(len(reply))
        return reply

    # -- the two methods ------------------------------------------------------------------
    def poll(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        identity = self._authenticate(context)
        message = self._decode(request, context, identity, "Poll", min(POLL_LIMIT_BYTES, self._hard_cap))
        if not isinstance(message, PollRequest):
            self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, identity, "WRONG_MESSAGE_TYPE",
                         "Poll expects a PollRequest")
        self._check_claims(context, identity, message)
        return self._count(request, identity, codec.encode(self._board.poll(identity)))

    def submit(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        identity = self._authenticate(context)
        message = self._decode(request, context, identity, "Submit", self._submit_limit)
        if not isinstance(message, _SUBMITTED):
            self._refuse(context, grpc.StatusCode.INVALID_ARGUMENT, identity, "WRONG_MESSAGE_TYPE",
                         "Submit expects a result, a refusal, a secure-aggregation reply or a checkpoint")
        self._check_claims(context, identity, message)
        if isinstance(message, AuditCheckpoint):
            if self._witness is None:
                return codec.encode(Ack(False, "NO_WITNESS", "this aggregator does not witness checkpoints"))
            return self._count(request, identity, codec.encode(self._witness(identity, message)))
        ack: Ack = self._board.submit(message)
        if not ack.accepted:
            log.warning("rejected answer from %s: %s %s", identity, ack.code, ack.message)
        return self._count(request, identity, codec.encode(ack))


def _senders(value: Any) -> Iterator[Any]:
    """Every `sender` named by a secure-aggregation message inside `value` (the message
    itself, messages in its fields, in tuples and in dict values). Generic on purpose: a new
    protocol message with a sender is bound to the caller without touching this module.
    The codec bounds the nesting depth, so the recursion is bounded too."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for item in dataclasses.fields(value):
            if item.name == "sender":
                yield getattr(value, "sender")
            else:
                yield from _senders(getattr(value, item.name))
    elif isinstance(value, tuple):
        for item in value:
            yield from _senders(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _senders(item)


def _identity(data: bytes) -> bytes:
    return data


def start_server(config: AggregatorConfig, service: FederationService, max_workers: int = 16) -> tuple[grpc.Server, int]:
    """Binds with TLS that requires and verifies a client certificate from the federation CA
    (expired or foreign certificates fail the handshake). gRPC refuses a request above
    `max_message_bytes` before it reaches a handler. Returns the server and its port."""
    hard_cap = config.max_message_bytes
    service.set_hard_cap(hard_cap)
    credentials = grpc.ssl_server_credentials(
        [(config.tls.private_key.read_bytes(), config.tls.certificate.read_bytes())],
        root_certificates=config.tls.ca_certificate.read_bytes(),
        require_client_auth=True,
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", hard_cap),
            ("grpc.max_send_message_length", codec.MAX_MESSAGE_BYTES),
        ],
    )
    handlers = {
        POLL_METHOD: grpc.unary_unary_rpc_method_handler(service.poll, _identity, _identity),
        SUBMIT_METHOD: grpc.unary_unary_rpc_method_handler(service.submit, _identity, _identity),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    port = server.add_secure_port(config.listen_address, credentials)
    if port == 0:
        raise OSError(f"could not bind {config.listen_address}")
    server.start()
    return server, port
