"""Schemas for the `detail` of the event kinds whose conventions the report relies on.

Why check at record time: the privacy, disclosure and rounds sections are computed from
these fields; a silo that logged `eps` instead of `epsilon` would otherwise produce a report
that silently under-states privacy spent. Unknown extra keys are kept (components may add
context) but the documented ones must be present with the right types.
"""

from __future__ import annotations

from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from compliance.errors import InvalidEvent


class _Detail(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, strict=False)


class DpChargeDetail(_Detail):
    """`dp.charge`: one privacy-ledger charge for one dataset and round."""

    dataset: str = Field(min_length=1)
    plan_hash: str = Field(min_length=1)
    round: int = Field(ge=0)
    epsilon: float = Field(ge=0)
    delta: float = Field(ge=0, le=1)
    epsilon_spent_total: float = Field(ge=0)
    epsilon_budget: float = Field(ge=0)
    delta_budget: float = Field(ge=0, le=1)


class PayloadReleasedDetail(_Detail):
    """`payload.released`: one payload that left the node."""

    plan_hash: str = Field(min_length=1)
    round: int = Field(ge=0)
    kind: str = Field(min_length=1)
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    recipient: str = Field(min_length=1)


class RoundDetail(_Detail):
    """`round.joined` / `round.refused` / `round.completed`."""

    plan_hash: str = Field(min_length=1)
    round: int = Field(ge=0)
    silos: list[str] | None = None
    reason: str | None = None


class SiloStatusDetail(_Detail):
    """`silo.failing` / `silo.rejoined`: the aggregator's view of one silo's participation."""

    plan_hash: str = Field(min_length=1)
    round: int = Field(ge=0)
    silo: str = Field(min_length=1)
    consecutive_misses: int = Field(ge=0)


class CheckpointWitnessedDetail(_Detail):
    """`checkpoint.witnessed`: a peer checkpoint this node accepted."""

    origin: str = Field(min_length=1)
    size: int = Field(ge=0)
    root_hash: str = Field(pattern=r"^[0-9a-f]{64}$")


DETAIL_SCHEMAS: Mapping[str, type[_Detail]] = {
    "dp.charge": DpChargeDetail,
    "payload.released": PayloadReleasedDetail,
    "round.joined": RoundDetail,
    "round.refused": RoundDetail,
    "round.completed": RoundDetail,
    "silo.failing": SiloStatusDetail,
    "silo.rejoined": SiloStatusDetail,
    "checkpoint.witnessed": CheckpointWitnessedDetail,
}


def check_detail(kind: str, detail: Mapping[str, Any]) -> None:
    """Raise `InvalidEvent` naming the kind and field if `detail` breaks its convention."""
    schema = DETAIL_SCHEMAS.get(kind)
    if schema is None:
        return
    try:
        schema.model_validate(dict(detail))
    except ValidationError as exc:
        problems = "; ".join(
            f"detail.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}"
            for err in exc.errors()
        )
        raise InvalidEvent(f"{kind} event: {problems}") from None


def parse_detail(kind: str, detail: Mapping[str, Any]) -> _Detail | None:
    """The typed detail for kinds with a convention (None for the others)."""
    schema = DETAIL_SCHEMAS.get(kind)
    return None if schema is None else schema.model_validate(dict(detail))
