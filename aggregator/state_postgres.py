"""The aggregator's state in PostgreSQL (psycopg 3): the same tables and behaviour as the
SQLite store, for deployments whose state belongs on a managed database server rather than
on the aggregator's volume (`database_url: postgresql://...` in aggregator.yaml).

Every call runs in its own transaction on one connection, serialised by a lock because the
gRPC server calls in from many threads; so a checkpoint is all-or-nothing and no caller sees
another's half-written work. If the server drops the connection (a restart, a failover),
the next call reconnects, and calls that are safe to repeat are retried once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray
import psycopg
from psycopg.conninfo import conninfo_to_dict

from aggregator.state_store import (
    Checkpoint,
    DatabaseUrlInvalid,
    DeclarationRow,
    OutcomeRow,
    StateStoreUnavailable,
    decode_arrays,
    encode_arrays,
    redact_url,
)

log = logging.getLogger("healthfed.aggregator.state")

T = TypeVar("T")

# Arbitrary constant: serialises schema creation between aggregator processes started at once
# (CREATE TABLE IF NOT EXISTS alone can race on the catalog).
_SCHEMA_LOCK_KEY = 0x4865616C7468

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS plans (
        plan_hash TEXT PRIMARY KEY, plan_json BYTEA NOT NULL, status TEXT NOT NULL,
        started_at DOUBLE PRECISION NOT NULL, finished_at DOUBLE PRECISION, message TEXT)""",
    """CREATE TABLE IF NOT EXISTS checkpoints (
        plan_hash TEXT NOT NULL, round INTEGER NOT NULL, state BYTEA NOT NULL,
        created_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (plan_hash, round))""",
    # `id` keeps the recording order where two outcomes share a timestamp.
    """CREATE TABLE IF NOT EXISTS round_outcomes (
        id BIGSERIAL PRIMARY KEY, plan_hash TEXT NOT NULL, round INTEGER NOT NULL, attempt INTEGER NOT NULL,
        silo_id TEXT NOT NULL, outcome TEXT NOT NULL, code TEXT, message TEXT,
        recorded_at DOUBLE PRECISION NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS round_outcomes_by_plan ON round_outcomes (plan_hash, recorded_at, id)",
    # COLLATE "C": list plans and silos in byte order, as SQLite does, whatever the server's locale.
    """CREATE TABLE IF NOT EXISTS privacy_declarations (
        plan_hash TEXT COLLATE "C" NOT NULL, round INTEGER NOT NULL, silo_id TEXT COLLATE "C" NOT NULL,
        epsilon_spent DOUBLE PRECISION, epsilon_remaining DOUBLE PRECISION, delta DOUBLE PRECISION,
        recorded_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (plan_hash, round, silo_id))""",
    """CREATE TABLE IF NOT EXISTS revoked_certificates (
        serial_hex TEXT PRIMARY KEY, silo_id TEXT NOT NULL, revoked_at DOUBLE PRECISION NOT NULL,
        reason TEXT NOT NULL)""",
)


def describe_server(url: str) -> str:
    """'database "x" on host:port as user', for messages: everything but the password."""
    try:
        parts = conninfo_to_dict(url)
    except psycopg.ProgrammingError as error:
        raise DatabaseUrlInvalid(f"database_url {redact_url(url)!r} is malformed: {_one_line(error)}") from None
    host = parts.get("host") or parts.get("hostaddr") or "the default local socket"
    port = parts.get("port") or "5432"
    user = f" as {parts['user']}" if parts.get("user") else ""
    return f'database "{parts.get("dbname") or parts.get("user") or "(default)"}" on {host}:{port}{user}'


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


class PostgresStateStore:
    """See the module docstring. `url` is a libpq URL: postgresql://user:password@host:port/db."""

    def __init__(self, url: str, *, connect_timeout_s: int = 10) -> None:
        self.where = describe_server(url)
        self._url = url
        self._password = str(conninfo_to_dict(url).get("password") or "")
        self._connect_timeout_s = connect_timeout_s
        self._lock = threading.Lock()
        self._closed = False
        self._conn = self._connect()
        try:
            with self._conn.transaction():
                self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK_KEY,))
                for statement in _SCHEMA:
                    self._conn.execute(statement)
        except psycopg.Error as error:
            self._conn.close()
            raise StateStoreUnavailable(f"PostgreSQL state {self.where}: cannot create its tables: "
                                        f"{_one_line(error)}") from None

    def __repr__(self) -> str:
        return f"PostgresStateStore({self.where})"

    def _connect(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(
                self._url, autocommit=True, connect_timeout=self._connect_timeout_s,
                application_name="healthfed-aggregator",
            )
        except psycopg.Error as error:
            reason = _one_line(error)
            if self._password:
                reason = reason.replace(self._password, "***")
            raise StateStoreUnavailable(f"PostgreSQL state {self.where} is unreachable: {reason}") from None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._conn.close()

    def __enter__(self) -> PostgresStateStore:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def _run(self, work: Callable[[psycopg.Connection[Any]], T], *, repeatable: bool = True) -> T:
        """`work` in one transaction. A connection the server dropped is replaced; the call is
        retried once on the new one if `repeatable` (running it twice leaves the same state)."""
        with self._lock:
            if self._closed:
                raise StateStoreUnavailable(f"PostgreSQL state {self.where}: the store is closed")
            for attempt in (1, 2):
                if self._conn.closed:
                    self._conn = self._connect()
                try:
                    with self._conn.transaction():
                        return work(self._conn)
                except psycopg.OperationalError as error:
                    if not self._conn.broken or not repeatable or attempt == 2:
                        raise
                    log.warning("PostgreSQL connection to %s lost (%s); reconnecting", self.where, _one_line(error))
            raise AssertionError("unreachable")

    def _rows(self, query: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return self._run(lambda conn: conn.execute(query, parameters).fetchall())

    def _write(self, query: str, parameters: tuple[Any, ...], *, repeatable: bool = True) -> None:
        self._run(lambda conn: conn.execute(query, parameters), repeatable=repeatable)

    def start_plan(self, plan_hash: str, plan_json: bytes) -> None:
        self._write(
            "INSERT INTO plans (plan_hash, plan_json, status, started_at) VALUES (%s, %s, 'running', %s) "
            "ON CONFLICT (plan_hash) DO UPDATE SET status = 'running', message = NULL",
            (plan_hash, bytes(plan_json), time.time()),
        )

    def finish_plan(self, plan_hash: str, status: str, message: str = "") -> None:
        self._write(
            "UPDATE plans SET status = %s, finished_at = %s, message = %s WHERE plan_hash = %s",
            (status, time.time(), message, plan_hash),
        )

    def plan_status(self, plan_hash: str) -> str | None:
        rows = self._rows("SELECT status FROM plans WHERE plan_hash = %s", (plan_hash,))
        return rows[0][0] if rows else None

    def save_checkpoint(self, plan_hash: str, round_number: int, state: list[NDArray[Any]]) -> None:
        self._write(
            "INSERT INTO checkpoints (plan_hash, round, state, created_at) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (plan_hash, round) DO UPDATE SET state = EXCLUDED.state, created_at = EXCLUDED.created_at",
            (plan_hash, round_number, encode_arrays(state), time.time()),
        )

    def latest_checkpoint(self, plan_hash: str) -> Checkpoint | None:
        rows = self._rows(
            "SELECT round, state FROM checkpoints WHERE plan_hash = %s ORDER BY round DESC LIMIT 1", (plan_hash,)
        )
        return Checkpoint(plan_hash, rows[0][0], decode_arrays(bytes(rows[0][1]))) if rows else None

    def latest_checkpoint_at(self, plan_hash: str, round_number: int) -> list[NDArray[Any]]:
        rows = self._rows(
            "SELECT state FROM checkpoints WHERE plan_hash = %s AND round = %s", (plan_hash, round_number)
        )
        if not rows:
            raise LookupError(f"no checkpoint for round {round_number} of plan {plan_hash[:12]}")
        return decode_arrays(bytes(rows[0][0]))

    def record_outcome(
        self, plan_hash: str, round_number: int, attempt: int, silo_id: str, outcome: str,
        code: str = "", message: str = "",
    ) -> None:
        # Not repeatable: if the commit landed but its acknowledgement was lost, a retry would
        # record the outcome twice. The caller sees the error instead.
        self._write(
            "INSERT INTO round_outcomes (plan_hash, round, attempt, silo_id, outcome, code, message, recorded_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (plan_hash, round_number, attempt, silo_id, outcome, code, message, time.time()),
            repeatable=False,
        )

    def outcomes(self, plan_hash: str) -> list[OutcomeRow]:
        """In the order recorded."""
        return self._rows(
            "SELECT round, attempt, silo_id, outcome, code, message FROM round_outcomes "
            "WHERE plan_hash = %s ORDER BY recorded_at, id",
            (plan_hash,),
        )

    def record_declaration(self, plan_hash: str, round_number: int, silo_id: str, declaration: dict[str, float]) -> None:
        """A silo's own statement of privacy spent on the plan's dataset (see the SQLite store)."""
        self._write(
            "INSERT INTO privacy_declarations VALUES (%s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (plan_hash, round, silo_id) DO UPDATE SET epsilon_spent = EXCLUDED.epsilon_spent, "
            "epsilon_remaining = EXCLUDED.epsilon_remaining, delta = EXCLUDED.delta, recorded_at = EXCLUDED.recorded_at",
            (plan_hash, round_number, silo_id, declaration.get("epsilon_spent"),
             declaration.get("epsilon_remaining"), declaration.get("delta"), time.time()),
        )

    def declarations(self, plan_hash: str | None = None) -> list[DeclarationRow]:
        """Latest declaration per (plan, silo): plan_hash, round, silo, ε spent, ε left, δ."""
        query = (
            "SELECT DISTINCT ON (plan_hash, silo_id) plan_hash, round, silo_id, epsilon_spent, epsilon_remaining, "
            "delta FROM privacy_declarations" + (" WHERE plan_hash = %s" if plan_hash else "")
            + " ORDER BY plan_hash, silo_id, round DESC"
        )
        return self._rows(query, (plan_hash,) if plan_hash else ())

    def revoke(self, serial_hex: str, silo_id: str, reason: str) -> None:
        self._write(
            "INSERT INTO revoked_certificates VALUES (%s, %s, %s, %s) ON CONFLICT (serial_hex) DO NOTHING",
            (serial_hex, silo_id, time.time(), reason),
        )

    def is_revoked(self, serial_hex: str) -> bool:
        return bool(self._rows("SELECT 1 FROM revoked_certificates WHERE serial_hex = %s", (serial_hex,)))
