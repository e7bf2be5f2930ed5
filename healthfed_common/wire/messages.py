"""Every message that crosses between a silo and the aggregator.

Fields use only str, int, float, bool, bytes, numpy arrays, tuples and str-keyed dicts of
those, so `codec` can carry them without pickling. A silo never sends exception text:
refusals carry a stable `code` and a message written for the coordinator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from typing import TYPE_CHECKING, Any

import numpy as np

from healthfed_common.secagg import (
    ConsistencySignature,
    EncryptedShare,
    KeyAdvertisement,
    KeyRoster,
    MaskedInput,
    ShareInbox,
    UnmaskRequest,
    UnmaskResponse,
    ConsistencySignature,
)

PROTOCOL_VERSION = 2
"""2: a silo's AuditCheckpoint names the aggregator log size it last witnessed, and the
aggregator answers an accepted one with its own checkpoint (AggregatorCheckpoint)."""

if TYPE_CHECKING:
    Array = np.ndarray[Any, Any]
else:
    # the codec resolves these hints at run time and keys arrays by the bare class
    Array = np.ndarray


@dataclass(frozen=True)
class PollRequest:
    """A silo asking for work; the silo id must match its certificate."""

    silo_id: str
    software_version: str


@dataclass(frozen=True)
class Wait:
    retry_after_s: float
    reason: str


@dataclass(frozen=True)
class TrainTask:
    """One round's work: the plan (as canonical JSON, checked against `plan_hash`), the
    fingerprint of the computation the aggregator built, and `prepare`'s output."""

    task_id: str
    plan_json: bytes
    plan_hash: str
    round: int
    attempt: int
    fingerprint: str
    client_input: tuple[Array, ...]
    secagg: "SecAggSession | None" = None


@dataclass(frozen=True)
class EvaluateTask:
    """Evaluate the final model on the silo's held-out subset."""

    task_id: str
    plan_json: bytes
    plan_hash: str
    model_weights: tuple[Array, ...]


@dataclass(frozen=True)
class PlanFinished:
    plan_hash: str
    rounds_completed: int


@dataclass(frozen=True)
class TrainResult:
    """`work`'s output: the plainly aggregated part (allow-listed training metrics) and the
    integer vectors for the secure sum (summed in plain until secure aggregation is on).
    `declarations`: the silo's own statement of privacy spent on the plan's dataset."""

    silo_id: str
    task_id: str
    plan_hash: str
    round: int
    metrics_part: tuple[Array, ...]
    secure_parts: tuple[Array, ...]
    declarations: dict[str, float] = field(default_factory=dict)
    secagg: Any = None  # the silo's KeyAdvertisement when the round is securely aggregated


@dataclass(frozen=True)
class EvaluateResult:
    silo_id: str
    task_id: str
    plan_hash: str
    num_examples: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Refusal:
    """A silo declining a task, with a stable code (e.g. UNKNOWN_MODEL,
    FINGERPRINT_MISMATCH, FEATURE_NOT_ALLOWED, PLAN_NOT_APPROVED, PRIVACY_BUDGET_EXCEEDED)."""

    silo_id: str
    task_id: str
    plan_hash: str
    round: int
    code: str
    message: str


@dataclass(frozen=True)
class SecAggSession:
    """The secure-aggregation session of a round, as the aggregator announces it; each silo
    re-derives it (healthfed_common.secure_round) and refuses a different one."""

    session_id: bytes
    participants: tuple[str, ...]
    threshold: int
    bitwidths: tuple[int, ...]
    vector_lengths: tuple[int, ...]
    neighbours: int


@dataclass(frozen=True)
class SecAggPhaseTask:
    """One later phase of a round's protocol for one silo: `payload` is the KeyRoster
    (phase share_keys), that silo's ShareInbox (masked_input) or the UnmaskRequest (unmask)."""

    task_id: str
    plan_hash: str
    round: int
    phase: str
    payload: Any


@dataclass(frozen=True)
class SecAggReply:
    """A silo's protocol message for a phase: its encrypted shares, masked input (with the
    plain, allow-listed metrics) or unmasking shares."""

    silo_id: str
    task_id: str
    plan_hash: str
    round: int
    payload: Any


@dataclass(frozen=True)
class SharesBundle:
    shares: tuple[EncryptedShare, ...]


@dataclass(frozen=True)
class AuditCheckpoint:
    """A silo's latest signed audit-log checkpoint with the consistency proof from the
    last one the aggregator accepted: the aggregator witnesses it, so the silo cannot later
    rewrite its history unnoticed (nor can the aggregator claim it saw another one)."""

    silo_id: str
    checkpoint: dict[str, str | int]
    consistency_proof: tuple[bytes, ...]
    previous_size: int
    aggregator_witnessed_size: int
    """The size of the aggregator's log at the last aggregator checkpoint this silo accepted
    (0 before the first): the aggregator's answer must prove its log extends that one."""


@dataclass(frozen=True)
class AggregatorCheckpoint:
    """The aggregator's answer to an accepted AuditCheckpoint: its own latest signed
    checkpoint, the consistency proof from the size the silo last witnessed, and the entry of
    its log that acknowledges the silo's checkpoint (`acknowledgment`, at
    `acknowledgment_index`) with its inclusion proof in that checkpoint's tree. The silo stores
    the checkpoint only if all of it checks out: each silo is a witness of the part of the
    aggregator's log up to its acknowledgment, as the aggregator is of the silo's log."""

    checkpoint: dict[str, str | int]
    consistency_proof: tuple[bytes, ...]
    acknowledgment: bytes
    acknowledgment_index: int
    inclusion_proof: tuple[bytes, ...]


@dataclass(frozen=True)
class Ack:
    accepted: bool
    code: str = ""
    message: str = ""


MESSAGE_TYPES: tuple[type, ...] = (
    PollRequest,
    Wait,
    TrainTask,
    EvaluateTask,
    PlanFinished,
    TrainResult,
    EvaluateResult,
    Refusal,
    AuditCheckpoint,
    AggregatorCheckpoint,
    Ack,
    SecAggSession,
    SecAggPhaseTask,
    SecAggReply,
    SharesBundle,
    KeyAdvertisement,
    KeyRoster,
    EncryptedShare,
    ShareInbox,
    MaskedInput,
    UnmaskRequest,
    UnmaskResponse,
    ConsistencySignature,
)
