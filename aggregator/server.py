"""The aggregator's gRPC endpoint: mutual TLS with the federation CA, and per-call checks
that the caller's certificate is not revoked, belongs to an enrolled silo and that every
message claims the silo id in that certificate."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc

from aggregator.config import AggregatorConfig
from aggregator.pki import certificate_serial_hex
from aggregator.state_store import StateBackend
from aggregator.task_board import TaskBoard
from healthfed_common.errors import WireFormatError
from healthfed_common.wire import codec
from healthfed_common.wire.messages import (
    Ack,
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
WitnessHook = Callable[[str, dict, tuple], "str | None"]


class FederationService:
    def __init__(
        self,
        board: TaskBoard,
        store: StateBackend,
        enrolled: frozenset[str],
        on_refused_connection: RefusalHook | None = None,
        witness: WitnessHook | None = None,
        metrics: Any = None,
    ) -> None:
        self._witness = witness
        self._metrics = metrics
        self._board = board
        self._store = store
        self._enrolled = enrolled
        self._on_refused = on_refused_connection or (lambda *_: None)

    def _authenticate(self, context: grpc.ServicerContext, claimed: str) -> None:
        auth = context.auth_context()
        names = auth.get("x509_common_name") or []
        pems = auth.get("x509_pem_cert") or []
        if not names or not pems:
            self._refuse(context, grpc.StatusCode.UNAUTHENTICATED, claimed, "NO_CLIENT_CERTIFICATE",
                         "a client certificate is required")
        identity = names[0].decode()
        serial = certificate_serial_hex(pems[0])
        if self._store.is_revoked(serial):
            self._refuse(context, grpc.StatusCode.PERMISSION_DENIED, identity, "CERTIFICATE_REVOKED",
                         f"certificate {serial} of {identity} has been revoked")
        if identity not in self._enrolled:
            self._refuse(context, grpc.StatusCode.PERMISSION_DENIED, identity, "NOT_ENROLLED",
                         f"{identity} is not enrolled in this federation")
        if claimed != identity:
            self._refuse(context, grpc.StatusCode.PERMISSION_DENIED, identity, "IDENTITY_MISMATCH",
                         f"certificate is for {identity!r} but the message claims {claimed!r}")

    def _refuse(self, context: grpc.ServicerContext, status: grpc.StatusCode, who: str, code: str,
                message: str) -> None:
        log.warning("refused %s: %s (%s)", who, message, code)
        self._on_refused(who, code, message)
        context.abort(status, f"{code}: {message}")

    def _decode(self, request: bytes, context: grpc.ServicerContext) -> Any:
        try:
            return codec.decode(request)
        except WireFormatError as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{error.code}: {error}")

    def _count(self, request: bytes, silo_id: str, reply: bytes) -> bytes:
        if self._metrics is not None:
            self._metrics.bytes_in(len(request))
            self._metrics.silo_seen(silo_id)
            self._metrics.bytes_out(len(reply))
        return reply

    def poll(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        message = self._decode(request, context)
        if not isinstance(message, PollRequest):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Poll expects a PollRequest")
        self._authenticate(context, message.silo_id)
        return self._count(request, message.silo_id, codec.encode(self._board.poll(message.silo_id)))

    def submit(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        message = self._decode(request, context)
        if not isinstance(message, (TrainResult, EvaluateResult, Refusal, AuditCheckpoint, SecAggReply)):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "Submit expects a result, a refusal or a checkpoint")
        self._authenticate(context, message.silo_id)
        if isinstance(message, AuditCheckpoint):
            if self._witness is None:
                return codec.encode(Ack(False, "NO_WITNESS", "this aggregator does not witness checkpoints"))
            problem = self._witness(message.silo_id, dict(message.checkpoint), message.consistency_proof)
            reply = codec.encode(Ack(problem is None, "CHECKPOINT_REJECTED" if problem else "", problem or ""))
            return self._count(request, message.silo_id, reply)
        ack: Ack = self._board.submit(message)
        if not ack.accepted:
            log.warning("rejected answer from %s: %s %s", message.silo_id, ack.code, ack.message)
        return self._count(request, message.silo_id, codec.encode(ack))


def _identity(data: bytes) -> bytes:
    return data


def start_server(config: AggregatorConfig, service: FederationService, max_workers: int = 16) -> tuple[grpc.Server, int]:
    """Binds with TLS that requires and verifies a client certificate from the federation CA
    (expired or foreign certificates fail the handshake). Returns the server and its port."""
    credentials = grpc.ssl_server_credentials(
        [(config.tls.private_key.read_bytes(), config.tls.certificate.read_bytes())],
        root_certificates=config.tls.ca_certificate.read_bytes(),
        require_client_auth=True,
    )
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        options=[
            ("grpc.max_receive_message_length", codec.MAX_MESSAGE_BYTES),
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
