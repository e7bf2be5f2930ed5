"""The silo's privacy ledger: a per-dataset (epsilon, delta) budget and every DP charge.

Invariants (each has a test in tests/dp/):
- A charge is committed (WAL, synchronous=FULL) before `charge` returns, and the caller
  releases an update only after `charge` returned: a crash can lose an upload, never a charge.
- One charge per (dataset, plan_hash, round): a retry of the same round gets the stored
  charge back and spends nothing more (the retried upload is the same sampled round).
- A charge that would take the composition of all charged events past the budget is refused
  with `BudgetExceeded`, and nothing is written.
- The check-then-insert runs inside `BEGIN IMMEDIATE`, so concurrent charges on one database
  file (threads or processes) are serialised and cannot overspend together.

Spent epsilon is the composition of the stored `DpEvent`s by the accountant (RDP or PLD from
dp-accounting) at the budget's delta -- never a sum of per-round epsilons. Both accountants
give valid upper bounds, so a decision made with either is sound; `spent()` reports the
accountant of the latest charge unless asked for another.
"""

from __future__ import annotations

import sqlite3
import time
from silo_node.audit_sink import AuditSink
from dataclasses import dataclass
from typing import Any, Protocol

import dp_accounting

from healthfed_common.dp.accounting import (
    ACCOUNTANTS,
    AccountantName,
    coerce_event,
    epsilon_for_events,
    event_from_json,
    event_to_json,
)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS privacy_budget (
        dataset TEXT PRIMARY KEY,
        epsilon REAL NOT NULL CHECK (epsilon > 0),
        delta REAL NOT NULL CHECK (delta > 0 AND delta < 1),
        updated_at REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS privacy_charge (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        dataset TEXT NOT NULL,
        plan_hash TEXT NOT NULL,
        round INTEGER NOT NULL CHECK (round >= 0),
        event_json TEXT NOT NULL,
        accountant TEXT NOT NULL CHECK (accountant IN ('rdp', 'pld')),
        epsilon REAL NOT NULL,
        delta REAL NOT NULL,
        epsilon_spent_total REAL NOT NULL,
        charged_at REAL NOT NULL,
        UNIQUE (dataset, plan_hash, round)
    )""",
    "CREATE INDEX IF NOT EXISTS privacy_charge_dataset ON privacy_charge (dataset, id)",
)


class PrivacyLedgerError(Exception):
    """Root of the ledger's errors (a leaf of silo_node's root error once it has one)."""

    code = "PRIVACY_LEDGER_ERROR"


class BudgetExceeded(PrivacyLedgerError, PermissionError):
    """The charge would take the dataset past its privacy budget; nothing was charged.
    The message holds only aggregate numbers, safe to send to the aggregator."""

    code = "PRIVACY_BUDGET_EXCEEDED"

    def __init__(
        self,
        dataset: str,
        *,
        epsilon_spent: float,
        epsilon_after: float,
        epsilon_budget: float,
        delta_budget: float,
        accountant: str,
    ) -> None:
        self.dataset = dataset
        self.epsilon_spent = epsilon_spent
        self.epsilon_after = epsilon_after
        self.epsilon_budget = epsilon_budget
        self.delta_budget = delta_budget
        remaining = max(0.0, epsilon_budget - epsilon_spent)
        super().__init__(
            f"privacy budget of dataset {dataset!r} would be exceeded: spent epsilon "
            f"{epsilon_spent:.6g} of {epsilon_budget:.6g} (delta {delta_budget:.3g}, "
            f"{accountant}); this round would bring it to {epsilon_after:.6g}; "
            f"remaining {remaining:.6g}"
        )


class BudgetNotSet(PrivacyLedgerError, LookupError):
    """The dataset has no budget: a dataset without one is never charged (or trained on)."""

    code = "PRIVACY_BUDGET_NOT_SET"


class InvalidCharge(PrivacyLedgerError, ValueError):
    """Malformed charge arguments (bad round, unknown accountant, unreadable DP event)."""

    code = "PRIVACY_CHARGE_INVALID"


class ChargeConflict(PrivacyLedgerError, ValueError):
    """The same (dataset, plan, round) was charged before with a different DP event: a retry
    must be the same round, so this is refused rather than silently accepted."""

    code = "PRIVACY_CHARGE_CONFLICT"




@dataclass(frozen=True)
class Budget:
    dataset: str
    epsilon: float
    delta: float


@dataclass(frozen=True)
class Charge:
    """One committed charge. `newly_charged` is False when a retry returned the stored one."""

    dataset: str
    plan_hash: str
    round: int
    event: dp_accounting.DpEvent
    accountant: AccountantName
    epsilon: float
    delta: float
    epsilon_spent_total: float
    charged_at: float
    newly_charged: bool = True


class PrivacyLedger:
    """Budgets and charges in the silo's SQLite database (see module docstring)."""

    def __init__(self, conn: sqlite3.Connection, *, audit: AuditSink | None = None, actor: str = "silo") -> None:
        self._conn = conn
        self._audit = audit
        self._actor = actor
        for statement in _SCHEMA:
            conn.execute(statement)

    # --- budgets -----------------------------------------------------------------------
    def set_budget(self, dataset: str, epsilon: float, delta: float) -> Budget:
        """Sets (or replaces) a dataset's total budget. Lowering it below what is spent is
        allowed: it simply refuses every further charge."""
        if not epsilon > 0 or not 0 < delta < 1:
            raise InvalidCharge("budget epsilon must be > 0 and delta in (0, 1)")
        self._conn.execute(
            "INSERT INTO privacy_budget (dataset, epsilon, delta, updated_at) VALUES (?, ?, ?, ?)"
            " ON CONFLICT(dataset) DO UPDATE SET epsilon=excluded.epsilon,"
            " delta=excluded.delta, updated_at=excluded.updated_at",
            (dataset, float(epsilon), float(delta), time.time()),
        )
        if self._audit is not None:
            self._audit.record(
                "dp.budget_set", actor=self._actor, entities={"dataset": dataset},
                detail={"dataset": dataset, "epsilon_budget": float(epsilon), "delta_budget": float(delta)},
            )
        return Budget(dataset, float(epsilon), float(delta))

    def budget(self, dataset: str) -> Budget:
        row = self._conn.execute(
            "SELECT epsilon, delta FROM privacy_budget WHERE dataset = ?", (dataset,)
        ).fetchone()
        if row is None:
            raise BudgetNotSet(f"dataset {dataset!r} has no privacy budget")
        return Budget(dataset, float(row[0]), float(row[1]))

    def datasets(self) -> list[str]:
        """Every dataset with a budget or a charge."""
        rows = self._conn.execute(
            "SELECT dataset FROM privacy_budget UNION SELECT dataset FROM privacy_charge ORDER BY 1"
        ).fetchall()
        return [r[0] for r in rows]

    # --- charging ----------------------------------------------------------------------
    def charge(
        self,
        dataset: str,
        plan_hash: str,
        round: int,
        event: dp_accounting.DpEvent | str | bytes | dict[str, Any],
        accountant: AccountantName = "rdp",
    ) -> Charge:
        """Durably records one round's DP event, or refuses it. See the module docstring.

        Returns the committed charge; a retry of a charged (dataset, plan_hash, round)
        returns the stored charge with `newly_charged=False`."""
        if accountant not in ACCOUNTANTS:
            raise InvalidCharge(f"unknown accountant {accountant!r}")
        if not isinstance(round, int) or isinstance(round, bool) or round < 0:
            raise InvalidCharge("round must be a non-negative integer")
        if not plan_hash:
            raise InvalidCharge("plan_hash is required")
        try:
            dp_event = coerce_event(event)
        except ValueError as error:
            raise InvalidCharge(f"unreadable DP event: {error}") from None
        event_json = event_to_json(dp_event)
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            existing = self._find(dataset, plan_hash, round)
            if existing is not None:
                conn.execute("ROLLBACK")
                if event_to_json(existing.event) != event_json:
                    raise ChargeConflict(
                        f"round {round} of plan {plan_hash[:12]} was charged on {dataset!r} "
                        "with a different DP event"
                    )
                return existing
            budget = self.budget(dataset)
            previous = [event_from_json(r[0]) for r in conn.execute(
                "SELECT event_json FROM privacy_charge WHERE dataset = ? ORDER BY id", (dataset,)
            )]
            spent_before = epsilon_for_events(previous, budget.delta, accountant)
            spent_after = epsilon_for_events(previous + [dp_event], budget.delta, accountant)
            if spent_after > budget.epsilon:
                conn.execute("ROLLBACK")
                error = BudgetExceeded(
                    dataset,
                    epsilon_spent=spent_before,
                    epsilon_after=spent_after,
                    epsilon_budget=budget.epsilon,
                    delta_budget=budget.delta,
                    accountant=accountant,
                )
                self._record_refusal(dataset, plan_hash, round, error)
                raise error
            epsilon_alone = epsilon_for_events([dp_event], budget.delta, accountant)
            now = time.time()
            conn.execute(
                "INSERT INTO privacy_charge (dataset, plan_hash, round, event_json, accountant,"
                " epsilon, delta, epsilon_spent_total, charged_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (dataset, plan_hash, round, event_json, accountant, epsilon_alone,
                 budget.delta, spent_after, now),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        charge = Charge(dataset, plan_hash, round, dp_event, accountant, epsilon_alone,
                        budget.delta, spent_after, now, True)
        if self._audit is not None:
            self._audit.record(
                "dp.charge", actor=self._actor,
                entities={"dataset": dataset, "plan_hash": plan_hash},
                detail={
                    "dataset": dataset, "plan_hash": plan_hash, "round": round,
                    "epsilon": epsilon_alone, "delta": budget.delta,
                    "epsilon_spent_total": spent_after, "epsilon_budget": budget.epsilon,
                    "delta_budget": budget.delta,
                },
            )
        return charge

    def _record_refusal(self, dataset: str, plan_hash: str, round: int, error: BudgetExceeded) -> None:
        if self._audit is None:
            return
        self._audit.record(
            "dp.charge", actor=self._actor, outcome="refused",
            entities={"dataset": dataset, "plan_hash": plan_hash},
            detail={
                "dataset": dataset, "plan_hash": plan_hash, "round": round,
                "code": error.code, "epsilon_spent_total": error.epsilon_spent,
                "epsilon_after": error.epsilon_after, "epsilon_budget": error.epsilon_budget,
                "delta_budget": error.delta_budget,
            },
        )

    def _find(self, dataset: str, plan_hash: str, round: int) -> Charge | None:
        row = self._conn.execute(
            "SELECT dataset, plan_hash, round, event_json, accountant, epsilon, delta,"
            " epsilon_spent_total, charged_at FROM privacy_charge"
            " WHERE dataset = ? AND plan_hash = ? AND round = ?",
            (dataset, plan_hash, round),
        ).fetchone()
        return None if row is None else _charge_from_row(row, newly_charged=False)

    # --- reading -----------------------------------------------------------------------
    def charges(self, dataset: str, plan_hash: str | None = None) -> list[Charge]:
        """Charges in the order they were made (optionally of one plan only)."""
        query = (
            "SELECT dataset, plan_hash, round, event_json, accountant, epsilon, delta,"
            " epsilon_spent_total, charged_at FROM privacy_charge WHERE dataset = ?"
        )
        params: tuple[Any, ...] = (dataset,)
        if plan_hash is not None:
            query += " AND plan_hash = ?"
            params += (plan_hash,)
        rows = self._conn.execute(query + " ORDER BY id", params).fetchall()
        return [_charge_from_row(r, newly_charged=False) for r in rows]

    def spent(self, dataset: str, accountant: AccountantName | None = None) -> tuple[float, float]:
        """(epsilon, delta) spent: every charged event composed by `accountant` (default: the
        latest charge's) at the budget's delta. (0, 0) when nothing was charged."""
        charges = self.charges(dataset)
        if not charges:
            return 0.0, 0.0
        delta = self.budget(dataset).delta
        chosen = accountant or charges[-1].accountant
        return epsilon_for_events([c.event for c in charges], delta, chosen), delta

    def remaining(self, dataset: str, accountant: AccountantName | None = None) -> tuple[float, float]:
        """(epsilon left, budget delta): budget epsilon minus composed spent epsilon, >= 0."""
        budget = self.budget(dataset)
        epsilon, _ = self.spent(dataset, accountant)
        return max(0.0, budget.epsilon - epsilon), budget.delta


def _charge_from_row(row: tuple[Any, ...], *, newly_charged: bool) -> Charge:
    return Charge(
        dataset=row[0], plan_hash=row[1], round=int(row[2]), event=event_from_json(row[3]),
        accountant=row[4], epsilon=float(row[5]), delta=float(row[6]),
        epsilon_spent_total=float(row[7]), charged_at=float(row[8]), newly_charged=newly_charged,
    )
