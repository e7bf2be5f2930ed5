"""The node's approval policy: the hospital's standing limits on any training plan.

Read from one YAML file per silo. Limits are ceilings, not defaults: a plan outside them is
rejected whoever approves it (the steward changes the policy file to allow more). Within
them, `auto_approve` lets the node approve plans without a person; otherwise plans wait for
`silo-node plans approve`.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from silo_node.datasets.errors import PolicyInvalid


class ApprovalPolicy(BaseModel):
    """Standing limits on plans. Every field is documented because hospital IT edits it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    auto_approve: bool = Field(
        default=False, description="Approve plans within every limit below without a person."
    )
    allowed_models: tuple[str, ...] = Field(
        default=(), description="Model ids plans may use; empty means any model in this build's registry."
    )
    require_dp: bool = Field(default=True, description="Refuse plans without record-level differential privacy.")
    max_epsilon: float | None = Field(
        default=10.0, gt=0, description="Largest ε one plan may spend on this silo's data (None: no limit)."
    )
    max_delta: float | None = Field(default=1e-5, gt=0, lt=1, description="Largest δ one plan may use.")
    require_secure_aggregation: bool = Field(
        default=True, description="Refuse plans whose updates are not summed by secure aggregation."
    )
    min_secure_aggregation_threshold: int = Field(
        default=2, ge=1, description="Fewest silos whose updates must be summed before anything is revealed."
    )
    allowed_features: tuple[str, ...] | None = Field(
        default=None, description="Node-wide feature allow-list on top of each dataset's (None: datasets decide)."
    )
    non_private_plans_on_budgeted_datasets: Literal["refuse", "charge_infinity"] = Field(
        default="refuse",
        description="A plan without DP on a dataset that has a privacy budget: 'refuse' it "
        "(NON_PRIVATE_PLAN_ON_BUDGETED_DATASET), or 'charge_infinity': run it and charge the "
        "ledger epsilon = infinity before its update leaves (the budget is then spent for good).",
    )
    max_evaluations_per_plan: int = Field(
        default=1, ge=0,
        description="How many distinct models of one plan may be evaluated on the held-out records "
        "(exact, non-DP metrics, each counted in the ledger); beyond it EVALUATION_LIMIT_REACHED.",
    )
    approval_lifetime_days: float | None = Field(
        default=90.0, gt=0, description="Approvals expire after this many days and the plan is pending again."
    )

    @property
    def approval_lifetime(self) -> timedelta | None:
        return None if self.approval_lifetime_days is None else timedelta(days=self.approval_lifetime_days)

    @classmethod
    def from_yaml(cls, path: Path) -> "ApprovalPolicy":
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
            return cls.model_validate(document)
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            raise PolicyInvalid(f"{path}: cannot read approval policy: {type(error).__name__}") from None
        except ValidationError as error:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors())
            raise PolicyInvalid(f"{path}: {problems}") from None
