"""The silo's privacy ledger: a per-dataset (epsilon, delta) budget and every DP charge.

Invariants (each has a test in tests/dp/):
- A charge is committed (WAL, synchronous=FULL) before `charge` returns, and the caller
  releases an update only after `charge` returned: a crash can lose an upload, never a charge.
- One charge per (privacy unit, plan_hash, round): a retry of the same round gets the stored
  charge back and spends nothing more (the retried upload is the same sampled round).
- A charge that would take the composition of all charged events past the budget is refused
  with `BudgetExceeded`, and nothing is written.
- The check-then-insert runs inside `BEGIN IMMEDIATE`, so concurrent charges on one database
  file (threads or processes) are serialised and cannot overspend together.
- Nothing that leaves can dodge the ledger:
  * a non-private plan on a dataset with a budget is charged as epsilon = infinity
    (`charge_non_private`, a `dp_accounting.NonPrivateDpEvent`): spent becomes inf, nothing
    remains, and every later DP charge on that dataset is refused;
  * a budget change names the person who made it, is refused when it would rewrite history
    (delta changed once anything is charged: `BudgetDeltaLocked`, since spent epsilon is
    computed AT the budget's delta and a larger delta would lower it after the fact; epsilon
    below what is already spent: `BudgetBelowSpent`), and is written to the audit log inside
    the same database transaction, so a failed audit append leaves no change behind;
  * a dataset registered from the same content (sha256 of the registered source bytes, which
    the dataset registry records) shares the ledger of the first registration of that
    content: its "privacy unit". Budgets, charges and spent are the unit's. The mapping is kept
    in this ledger's own table and outlives the removal of the first registration, so remove
    + re-register cannot buy a fresh budget. What it does NOT catch: a copy that differs in
    any byte (one record dropped, rows reordered, another line ending) -- the steward's rule
    stays "one export, one dataset".
  * evaluations (exact loss/accuracy/AUC on held-out records, not DP) are counted per plan,
    recorded before release, and shown by `ledger show` as non-DP disclosures.

Spent epsilon is the composition of the stored `DpEvent`s by the accountant (RDP or PLD from
dp-accounting) at the budget's delta -- never a sum of per-round epsilons. Both accountants
give valid upper bounds, so a decision made with either is sound; `spent()` reports the
accountant of the latest charge unless asked for another.
"""

from __future__ import annotations

from silo_node.errors import SiloNodeError

import json
import math
import sqlite3
import time
from dataclasses import dataclass
from collections.abc import Callable, Mapping
from typing import Any

import dp_accounting

from healthfed_common.dp.accounting import (
    ACCOUNTANTS,
    AccountantName,
    coerce_event,
    epsilon_for_events,
    event_from_json,
    event_to_json,
)
from silo_node.audit_sink import AuditSink

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
    # content hash -> the privacy unit (first dataset name registered with that content);
    # never deleted, so a removed first registration still owns its content's ledger.
    """CREATE TABLE IF NOT EXISTS privacy_unit (
        content_sha256 TEXT PRIMARY KEY,
        unit TEXT NOT NULL,
        recorded_at REAL NOT NULL
    )""",
    # every non-DP release of a function of the records (today: evaluation metrics)
    """CREATE TABLE IF NOT EXISTS privacy_disclosure (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        dataset TEXT NOT NULL,
        plan_hash TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('evaluation')),
        subject_sha256 TEXT NOT NULL,
        released_json TEXT NOT NULL,
        released_at REAL NOT NULL,
        UNIQUE (dataset, plan_hash, kind, subject_sha256)
    )""",
)

INFINITE = float("inf")


class PrivacyLedgerError(SiloNodeError):
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
            f"{_fmt(epsilon_spent)} of {epsilon_budget:.6g} (delta {delta_budget:.3g}, "
            f"{accountant}); this round would bring it to {_fmt(epsilon_after)}; "
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


class BudgetDeltaLocked(PrivacyLedgerError, PermissionError):
    """Delta cannot change once anything is charged: spent epsilon is composed at the
    budget's delta, so raising delta would lower the spent epsilon after the fact."""

    code = "BUDGET_DELTA_LOCKED"


class BudgetBelowSpent(PrivacyLedgerError, PermissionError):
    """A budget epsilon below what is already spent would hide spending that happened."""

    code = "BUDGET_BELOW_SPENT"


class EvaluationLimitReached(PrivacyLedgerError, PermissionError):
    """The plan was already evaluated as often as the silo's policy allows."""

    code = "EVALUATION_LIMIT_REACHED"


@dataclass(frozen=True)
class Budget:
    dataset: str
    epsilon: float
    delta: float


@dataclass(frozen=True)
class Charge:
    """One committed charge. `newly_charged` is False when a retry returned the stored one.
    `dataset` is the privacy unit the charge was recorded on."""

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

    @property
    def non_private(self) -> bool:
        return isinstance(self.event, dp_accounting.NonPrivateDpEvent)


@dataclass(frozen=True)
class Disclosure:
    """One non-DP release recorded before it left (e.g. one evaluation's metrics)."""

    dataset: str
    plan_hash: str
    kind: str
    subject_sha256: str
    released: dict[str, Any]
    released_at: float
    newly_recorded: bool = True


class PrivacyLedger:
    """Budgets and charges in the silo's SQLite database (see module docstring)."""

    def __init__(self, conn: sqlite3.Connection, *, audit: AuditSink | None = None, actor: str = "silo") -> None:
        self._conn = conn
        self._audit = audit
        self._actor = actor
        for statement in _SCHEMA:
            conn.execute(statement)
        self._record_units()

    # --- privacy units -----------------------------------------------------------------
    def _record_units(self) -> None:
        """Maps every registered content hash not mapped yet to its first registration, so
        a later removal of that registration cannot detach its content from its ledger."""
        if not self._has_datasets_table():
            return
        self._conn.execute(
            "INSERT OR IGNORE INTO privacy_unit (content_sha256, unit, recorded_at)"
            " SELECT content_sha256, name, ? FROM datasets ORDER BY registered_at, rowid",
            (time.time(),),
        )

    def _has_datasets_table(self) -> bool:
        row = self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'datasets'"
        ).fetchone()
        return row is not None

    def unit_of(self, dataset: str) -> str:
        """The privacy unit whose budget and charges `dataset` uses: the first dataset
        registered with the same content, or the name itself when it is not registered (a
        budget may be set before registration) or is the first of its content."""
        if not self._has_datasets_table():
            return dataset
        row = self._conn.execute("SELECT content_sha256 FROM datasets WHERE name = ?", (dataset,)).fetchone()
        if row is None:
            return dataset
        self._record_units()
        unit = self._conn.execute("SELECT unit FROM privacy_unit WHERE content_sha256 = ?", (row[0],)).fetchone()
        return dataset if unit is None else str(unit[0])

    def aliases(self, unit: str) -> list[str]:
        """Registered datasets other than `unit` whose content maps to it."""
        if not self._has_datasets_table():
            return []
        rows = self._conn.execute(
            "SELECT d.name FROM datasets d JOIN privacy_unit u ON u.content_sha256 = d.content_sha256"
            " WHERE u.unit = ? AND d.name != ? ORDER BY d.name",
            (unit, unit),
        ).fetchall()
        return [r[0] for r in rows]

    # --- budgets -----------------------------------------------------------------------
    def set_budget(self, dataset: str, epsilon: float, delta: float, *, actor: str | None = None) -> Budget:
        """Sets or changes the budget of `dataset`'s privacy unit, recorded in the audit log
        with `actor` (the person; default this ledger's actor) and the old and new values.

        Refused (nothing written, the attempt audited): delta different from the current one
        once anything is charged (`BudgetDeltaLocked`); epsilon below what is spent
        (`BudgetBelowSpent`). The audit append happens inside the database transaction, before
        COMMIT: if it fails, the change is rolled back."""
        if not (math.isfinite(epsilon) and epsilon > 0) or not 0 < delta < 1:
            raise InvalidCharge("budget epsilon must be a finite number > 0 and delta in (0, 1)")
        who = actor or self._actor
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            unit = self.unit_of(dataset)
            old = self._budget_row(unit)
            charges = self.charges(unit)
            detail: dict[str, Any] = {
                "dataset": dataset, "privacy_unit": unit,
                "epsilon_budget": float(epsilon), "delta_budget": float(delta),
                "previous_epsilon_budget": old.epsilon if old else None,
                "previous_delta_budget": old.delta if old else None,
                "rounds_charged": len(charges),
            }
            refusal: PrivacyLedgerError | None = None
            if charges:
                locked_delta = old.delta if old is not None else charges[0].delta
                spent = epsilon_for_events([c.event for c in charges], locked_delta, charges[-1].accountant)
                detail["epsilon_spent"] = _jsonable(spent)
                if float(delta) != locked_delta:
                    refusal = BudgetDeltaLocked(
                        f"delta of {_unit_text(dataset, unit)} is {locked_delta:.3g} and cannot change: "
                        f"{len(charges)} round(s) are already charged at it (a larger delta would lower "
                        "the epsilon already spent after the fact)"
                    )
                elif float(epsilon) < spent:
                    refusal = BudgetBelowSpent(
                        f"epsilon {float(epsilon):g} is below the {_fmt(spent)} already spent on "
                        f"{_unit_text(dataset, unit)}"
                        + ("; a non-private plan was charged, so no budget can cover it" if math.isinf(spent) else "")
                    )
            if refusal is not None:
                conn.execute("ROLLBACK")
                self._audit_record("dp.budget_set", who, "minor_failure", unit, {**detail, "code": refusal.code})
                raise refusal
            conn.execute(
                "INSERT INTO privacy_budget (dataset, epsilon, delta, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(dataset) DO UPDATE SET epsilon=excluded.epsilon,"
                " delta=excluded.delta, updated_at=excluded.updated_at",
                (unit, float(epsilon), float(delta), time.time()),
            )
            self._audit_record("dp.budget_set", who, "success", unit, detail)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return Budget(unit, float(epsilon), float(delta))

    def _budget_row(self, unit: str) -> Budget | None:
        row = self._conn.execute(
            "SELECT epsilon, delta FROM privacy_budget WHERE dataset = ?", (unit,)
        ).fetchone()
        return None if row is None else Budget(unit, float(row[0]), float(row[1]))

    def budget(self, dataset: str) -> Budget:
        """The budget of `dataset`'s privacy unit (`Budget.dataset` names the unit)."""
        unit = self.unit_of(dataset)
        found = self._budget_row(unit)
        if found is None:
            raise BudgetNotSet(f"dataset {_unit_text(dataset, unit)} has no privacy budget")
        return found

    def has_budget(self, dataset: str) -> bool:
        return self._budget_row(self.unit_of(dataset)) is not None

    def datasets(self) -> list[str]:
        """Every dataset with a budget or a charge, and every registered alias of one."""
        rows = self._conn.execute(
            "SELECT dataset FROM privacy_budget UNION SELECT dataset FROM privacy_charge"
            " UNION SELECT dataset FROM privacy_disclosure ORDER BY 1"
        ).fetchall()
        names = {r[0] for r in rows}
        for unit in list(names):
            names.update(self.aliases(unit))
        return sorted(names)

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

        Returns the committed charge; a retry of a charged (unit, plan_hash, round)
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
        return self._charge(dataset, plan_hash, round, dp_event, accountant)

    def charge_non_private(self, dataset: str, plan_hash: str, round: int) -> Charge:
        """Charges one round of a non-private plan as epsilon = infinity (a
        `NonPrivateDpEvent`): after it, spent is inf, remaining 0 and every later DP charge on
        the unit is refused. Never refused for the budget itself (the silo's policy chose to
        pay it); a retry of the same round returns the stored charge."""
        if not isinstance(round, int) or isinstance(round, bool) or round < 0:
            raise InvalidCharge("round must be a non-negative integer")
        if not plan_hash:
            raise InvalidCharge("plan_hash is required")
        return self._charge(dataset, plan_hash, round, dp_accounting.NonPrivateDpEvent(), "rdp")

    def _charge(
        self, dataset: str, plan_hash: str, round: int, dp_event: dp_accounting.DpEvent,
        accountant: AccountantName,
    ) -> Charge:
        event_json = event_to_json(dp_event)
        non_private = isinstance(dp_event, dp_accounting.NonPrivateDpEvent)
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            unit = self.unit_of(dataset)
            existing = self._find(unit, plan_hash, round)
            if existing is not None:
                conn.execute("ROLLBACK")
                if event_to_json(existing.event) != event_json:
                    raise ChargeConflict(
                        f"round {round} of plan {plan_hash[:12]} was charged on {_unit_text(dataset, unit)} "
                        "with a different DP event"
                    )
                return existing
            budget = self.budget(dataset)
            previous = [event_from_json(r[0]) for r in conn.execute(
                "SELECT event_json FROM privacy_charge WHERE dataset = ? ORDER BY id", (unit,)
            )]
            spent_before = epsilon_for_events(previous, budget.delta, accountant)
            spent_after = epsilon_for_events(previous + [dp_event], budget.delta, accountant)
            if spent_after > budget.epsilon and not non_private:
                conn.execute("ROLLBACK")
                error = BudgetExceeded(
                    unit,
                    epsilon_spent=spent_before,
                    epsilon_after=spent_after,
                    epsilon_budget=budget.epsilon,
                    delta_budget=budget.delta,
                    accountant=accountant,
                )
                self._audit_record("dp.charge", self._actor, "minor_failure", unit, {
                    "dataset": unit, "plan_hash": plan_hash, "round": round,
                    **({"requested_as": dataset} if dataset != unit else {}),
                    "code": error.code, "epsilon": _jsonable(epsilon_for_events([dp_event], budget.delta, accountant)),
                    "delta": budget.delta, "epsilon_spent_total": _jsonable(spent_before),
                    "epsilon_after": _jsonable(spent_after), "epsilon_budget": budget.epsilon,
                    "delta_budget": budget.delta,
                }, plan_hash=plan_hash)
                raise error
            epsilon_alone = epsilon_for_events([dp_event], budget.delta, accountant)
            now = time.time()
            conn.execute(
                "INSERT INTO privacy_charge (dataset, plan_hash, round, event_json, accountant,"
                " epsilon, delta, epsilon_spent_total, charged_at) VALUES (?,?,?,?,?,?,?,?,?)",
                (unit, plan_hash, round, event_json, accountant, epsilon_alone,
                 budget.delta, spent_after, now),
            )
            # Audited before COMMIT: a charge whose audit entry could not be written is
            # rolled back (and the round refused), never committed unaudited.
            self._audit_record("dp.charge", self._actor, "success", unit, {
                "dataset": unit, "plan_hash": plan_hash, "round": round,
                "epsilon": _jsonable(epsilon_alone), "delta": budget.delta,
                "epsilon_spent_total": _jsonable(spent_after), "epsilon_budget": budget.epsilon,
                "delta_budget": budget.delta,
                **({"non_private": True} if non_private else {}),
                **({"requested_as": dataset} if dataset != unit else {}),
            }, plan_hash=plan_hash)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return Charge(unit, plan_hash, round, dp_event, accountant, epsilon_alone,
                      budget.delta, spent_after, now, True)

    def _audit_record(
        self, kind: str, actor: str, outcome: str, unit: str, detail: Mapping[str, Any],
        plan_hash: str | None = None,
    ) -> None:
        if self._audit is None:
            return
        entities = {"dataset": unit, **({"plan_hash": plan_hash} if plan_hash else {})}
        self._audit.record(kind, actor=actor, outcome=outcome, entities=entities, detail=dict(detail))

    def _find(self, unit: str, plan_hash: str, round: int) -> Charge | None:
        row = self._conn.execute(
            "SELECT dataset, plan_hash, round, event_json, accountant, epsilon, delta,"
            " epsilon_spent_total, charged_at FROM privacy_charge"
            " WHERE dataset = ? AND plan_hash = ? AND round = ?",
            (unit, plan_hash, round),
        ).fetchone()
        return None if row is None else _charge_from_row(row, newly_charged=False)

    # --- disclosures (non-DP releases) -------------------------------------------------
    def record_evaluation(
        self, dataset: str, plan_hash: str, weights_sha256: str, limit: int,
        compute: Callable[[], dict[str, Any]],
    ) -> Disclosure:
        """Records one evaluation release of plan `plan_hash` on `dataset` BEFORE it leaves,
        or refuses it (`EvaluationLimitReached`) when `limit` distinct models of the plan were
        already evaluated. `compute()` returns the JSON-ready metrics to release; it runs
        only when the evaluation is new and within the limit. A retry with the same weights
        gets the stored metrics back (the same disclosure, not a new one).

        Bounds: how many models per plan the aggregator can have scored on the held-out
        records. Does NOT bound what one evaluation reveals: the metrics are exact (not DP)
        and the aggregator chooses the weights, so a model crafted to test one held-out
        record is answered once; that is why it is counted and disclosed, not hidden."""
        if limit < 0:
            raise InvalidCharge("the evaluation limit must be >= 0")
        unit = self.unit_of(dataset)
        stored = self._disclosure(unit, plan_hash, "evaluation", weights_sha256)
        if stored is not None:
            return stored
        self._check_evaluation_limit(dataset, unit, plan_hash, limit)  # before any work
        released = compute()
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            stored = self._disclosure(unit, plan_hash, "evaluation", weights_sha256)
            if stored is not None:
                conn.execute("ROLLBACK")
                return stored
            self._check_evaluation_limit(dataset, unit, plan_hash, limit)
            now = time.time()
            text = json.dumps(released, sort_keys=True)
            conn.execute(
                "INSERT INTO privacy_disclosure (dataset, plan_hash, kind, subject_sha256, released_json, released_at)"
                " VALUES (?, ?, 'evaluation', ?, ?, ?)",
                (unit, plan_hash, weights_sha256, text, now),
            )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return Disclosure(unit, plan_hash, "evaluation", weights_sha256, json.loads(text), now, True)

    def _check_evaluation_limit(self, dataset: str, unit: str, plan_hash: str, limit: int) -> None:
        (count,) = self._conn.execute(
            "SELECT COUNT(*) FROM privacy_disclosure WHERE dataset = ? AND plan_hash = ? AND kind = 'evaluation'",
            (unit, plan_hash),
        ).fetchone()
        if count >= limit:
            raise EvaluationLimitReached(
                f"plan {plan_hash[:12]} was already evaluated {count} time(s) on {_unit_text(dataset, unit)}; "
                f"this silo's policy allows {limit} evaluation(s) per plan"
            )

    def _disclosure(self, unit: str, plan_hash: str, kind: str, subject: str) -> Disclosure | None:
        row = self._conn.execute(
            "SELECT released_json, released_at FROM privacy_disclosure"
            " WHERE dataset = ? AND plan_hash = ? AND kind = ? AND subject_sha256 = ?",
            (unit, plan_hash, kind, subject),
        ).fetchone()
        if row is None:
            return None
        return Disclosure(unit, plan_hash, kind, subject, json.loads(row[0]), float(row[1]), False)

    def disclosures(self, dataset: str) -> list[Disclosure]:
        """Non-DP releases recorded on `dataset`'s privacy unit, oldest first."""
        unit = self.unit_of(dataset)
        rows = self._conn.execute(
            "SELECT plan_hash, kind, subject_sha256, released_json, released_at FROM privacy_disclosure"
            " WHERE dataset = ? ORDER BY id", (unit,),
        ).fetchall()
        return [Disclosure(unit, r[0], r[1], r[2], json.loads(r[3]), float(r[4]), False) for r in rows]

    # --- reading -----------------------------------------------------------------------
    def charges(self, dataset: str, plan_hash: str | None = None) -> list[Charge]:
        """Charges of `dataset`'s privacy unit in the order they were made (optionally of
        one plan only)."""
        query = (
            "SELECT dataset, plan_hash, round, event_json, accountant, epsilon, delta,"
            " epsilon_spent_total, charged_at FROM privacy_charge WHERE dataset = ?"
        )
        params: tuple[Any, ...] = (self.unit_of(dataset),)
        if plan_hash is not None:
            query += " AND plan_hash = ?"
            params += (plan_hash,)
        rows = self._conn.execute(query + " ORDER BY id", params).fetchall()
        return [_charge_from_row(r, newly_charged=False) for r in rows]

    def spent(self, dataset: str, accountant: AccountantName | None = None) -> tuple[float, float]:
        """(epsilon, delta) spent: every charged event composed by `accountant` (default: the
        latest charge's) at the budget's delta. (0, 0) when nothing was charged; epsilon is
        inf once a non-private plan was charged."""
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


def _jsonable(value: float) -> float | str:
    """Audit entries are canonical JSON, which has no infinity: inf is written as "inf"
    (the compliance report's float fields read it back as inf)."""
    return "inf" if math.isinf(value) else float(value)


def _fmt(value: float) -> str:
    return "∞" if math.isinf(value) else f"{value:.6g}"


def _unit_text(dataset: str, unit: str) -> str:
    return repr(dataset) if dataset == unit else f"{dataset!r} (same content as {unit!r}, whose ledger it shares)"
