"""Every message that crosses between a silo and the aggregator.

Fields use only str, int, float, bool, bytes, numpy arrays, tuples and str-keyed dicts of
those, so `codec` can carry them without pickling. A silo never sends exception text:
refusals carry a stable `code` and a message written for the coordinator.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PROTOCOL_VERSION = 1


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
    client_input: tuple[np.ndarray, ...]


@dataclass(frozen=True)
class EvaluateTask:
    """Evaluate the final model on the silo's held-out subset."""

    task_id: str
    plan_json: bytes
    plan_hash: str
    model_weights: tuple[np.ndarray, ...]


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
    metrics_part: tuple[np.ndarray, ...]
    secure_parts: tuple[np.ndarray, ...]
    declarations: dict[str, float] = field(default_factory=dict)


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
class AuditCheckpoint:
    """A silo's latest signed audit-log checkpoint with the consistency proof from the
    last one the aggregator accepted: the aggregator witnesses it, so the silo cannot later
    rewrite its history unnoticed (nor can the aggregator claim it saw another one)."""

    silo_id: str
    checkpoint: dict[str, str | int]
    consistency_proof: tuple[bytes, ...]
    previous_size: int


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
    Ack,
)
