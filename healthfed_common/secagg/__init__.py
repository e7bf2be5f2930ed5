"""Secure aggregation for HealthFed: Bonawitz et al. 2017, with the SecAgg+ neighbour graph of
Bell et al. 2020 as an option (`SessionParams.neighbours`).

The aggregator learns only the sum mod 2^b of the inputs of at least `threshold` silos, and
silos may drop out at any phase as long as `threshold` remain. See client.py for what a silo
refuses and server.py for the aggregator's phase model. No TensorFlow here: vectors are
uint64 numpy arrays; the caller quantizes.

Public API (pinned by tests/secagg/test_api.py): the names in `__all__`.
"""

from healthfed_common.secagg.client import SecAggClient
from healthfed_common.secagg.errors import (
    AuthenticationFailed,
    CommitmentMismatch,
    ConsistencyFailed,
    Equivocation,
    InvalidInput,
    InvalidParameters,
    PhaseOrderError,
    ProtocolViolation,
    SecAggError,
    ShareRequestRefused,
    TooFewSurvivors,
)
from healthfed_common.secagg.graph_parameters import GraphChoice, GraphRequirement, GraphTooSparse, choose_graph
from healthfed_common.secagg.messages import (
    PROTOCOL_NAME,
    ConsistencySignature,
    EncryptedShare,
    KeyAdvertisement,
    KeyRoster,
    MaskedInput,
    ShareInbox,
    UnmaskRequest,
    UnmaskResponse,
)
from healthfed_common.secagg.params import SessionParams, default_threshold
from healthfed_common.secagg.server import SecAggServer

__all__ = [
    "PROTOCOL_NAME",
    "AuthenticationFailed",
    "CommitmentMismatch",
    "ConsistencyFailed",
    "ConsistencySignature",
    "Equivocation",
    "EncryptedShare",
    "InvalidInput",
    "InvalidParameters",
    "KeyAdvertisement",
    "KeyRoster",
    "MaskedInput",
    "PhaseOrderError",
    "ProtocolViolation",
    "SecAggClient",
    "SecAggError",
    "SecAggServer",
    "SessionParams",
    "ShareInbox",
    "ShareRequestRefused",
    "TooFewSurvivors",
    "UnmaskRequest",
    "UnmaskResponse",
    "GraphChoice",
    "GraphRequirement",
    "GraphTooSparse",
    "choose_graph",
    "default_threshold",
]
