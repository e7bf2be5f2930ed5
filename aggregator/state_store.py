"""The aggregator's durable state: plans, per-round checkpoints, round outcomes, the
privacy spending hospitals declare, and revoked certificates.

Two interchangeable backends implement one interface (`StateBackend`): SQLite in WAL mode
(the default, a file in the state directory) and PostgreSQL (`aggregator.state_postgres`),
for deployments where the aggregator's volume is not where its state should live. A
checkpoint is written in one transaction after each round's update, so a restart resumes
from the last completed round on either backend. `open_state_store` picks the backend from
`database_url` in aggregator.yaml.
"""

from __future__ import annotations

import io
import re
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from numpy.typing import NDArray

from aggregator.errors import AggregatorError

SQLITE_PREFIX = "sqlite:///"
POSTGRES_SCHEMES = ("postgresql", "postgres")

OutcomeRow = tuple[int, int, str, str, str, str]
DeclarationRow = tuple[str, int, str, float, float, float]


class DatabaseUrlInvalid(AggregatorError, ValueError):
    """`database_url` names no backend this aggregator has (or is malformed)."""

    code = "DATABASE_URL_INVALID"


class StateStoreUnavailable(AggregatorError, ConnectionError):
    """The state database cannot be opened or reached; the message names where, never a password."""

    code = "STATE_STORE_UNAVAILABLE"


def encode_arrays(arrays: list[NDArray[Any]]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, *arrays)
    return buffer.getvalue()


def decode_arrays(blob: bytes) -> list[NDArray[Any]]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
        return [archive[f"arr_{i}"] for i in range(len(archive.files))]


@dataclass(frozen=True)
class Checkpoint:
    plan_hash: str
    round: int
    state: list[NDArray[Any]]


class StateBackend(Protocol):
    """What the coordinator, the gRPC service and the CLIs need from the state database.
    Every method may be called from any of the gRPC server's threads."""

    def close(self) -> None: ...

    def __enter__(self) -> StateBackend: ...

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None: ...

    def start_plan(self, plan_hash: str, plan_json: bytes) -> None: ...

    def finish_plan(self, plan_hash: str, status: str, message: str = "") -> None: ...

    def plan_status(self, plan_hash: str) -> str | None: ...

    def save_checkpoint(self, plan_hash: str, round_number: int, state: list[NDArray[Any]]) -> None: ...

    def latest_checkpoint(self, plan_hash: str) -> Checkpoint | None: ...

    def latest_checkpoint_at(self, plan_hash: str, round_number: int) -> list[NDArray[Any]]: ...

    def record_outcome(self, plan_hash: str, round_number: int, attempt: int, silo_id: str, outcome: str,
                       code: str = "", message: str = "") -> None: ...

    def outcomes(self, plan_hash: str) -> list[OutcomeRow]: ...

    def record_declaration(self, plan_hash: str, round_number: int, silo_id: str,
                           declaration: dict[str, float]) -> None: ...

    def declarations(self, plan_hash: str | None = None) -> list[DeclarationRow]: ...

    def revoke(self, serial_hex: str, silo_id: str, reason: str) -> None: ...

    def is_revoked(self, serial_hex: str) -> bool: ...


# -- choosing a backend ---------------------------------------------------------------------

_LOOKS_LIKE_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
_PASSWORD_PARAMETER = re.compile(r"(password\s*=\s*)('[^']*'|[^\s&]+)", re.IGNORECASE)


def redact_url(url: str) -> str:
    """`url` safe to print: the password (in the authority or as a parameter) becomes ***."""
    text = _PASSWORD_PARAMETER.sub(r"\1***", url)
    try:
        parts = urlsplit(text)
    except ValueError:
        return text
    if parts.password is None:
        return text
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def sqlite_path_from_url(url: str) -> Path:
    """`sqlite:///relative/file` or `sqlite:////absolute/file` (SQLAlchemy's convention)."""
    rest = url[len(SQLITE_PREFIX):]
    if not url.startswith(SQLITE_PREFIX) or not rest or rest.endswith("/") or "?" in rest:
        raise DatabaseUrlInvalid(
            f"database_url {redact_url(url)!r}: a SQLite URL is sqlite:///relative/file.sqlite3 or "
            "sqlite:////absolute/file.sqlite3"
        )
    return Path(rest)


def check_database_url(url: str) -> str:
    """Refuses, before anything is opened, a URL that names no backend; returns the URL."""
    if url.startswith("sqlite:"):
        sqlite_path_from_url(url)
        return url
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in POSTGRES_SCHEMES:
        return url
    raise DatabaseUrlInvalid(
        f"database_url {redact_url(url)!r} is not supported: use sqlite:///path or "
        "postgresql://user@host:port/database"
    )


def open_state_store(target: str | Path) -> StateBackend:
    """The state database named by `target`: a `sqlite:///` or `postgresql://` URL, or a
    plain path to a SQLite file. Raises `DatabaseUrlInvalid` for any other URL and
    `StateStoreUnavailable` when the database cannot be opened or reached."""
    if isinstance(target, Path):
        return SqliteStateStore(target)
    if not _LOOKS_LIKE_URL.match(target) and "=" not in target:
        return SqliteStateStore(Path(target))
    url = check_database_url(target)  # "x://..." or a libpq "key=value" string: never a file name
    if url.startswith("sqlite:"):
        return SqliteStateStore(sqlite_path_from_url(url))
    # Imported here so a SQLite deployment never loads libpq.
    from aggregator.state_postgres import PostgresStateStore

    return PostgresStateStore(url)


# -- SQLite -----------------------------------------------------------------------------------

_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS plans (
    plan_hash TEXT PRIMARY KEY, plan_json BLOB NOT NULL, status TEXT NOT NULL,
    started_at REAL NOT NULL, finished_at REAL, message TEXT);
CREATE TABLE IF NOT EXISTS checkpoints (
    plan_hash TEXT NOT NULL, round INTEGER NOT NULL, state BLOB NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (plan_hash, round));
CREATE TABLE IF NOT EXISTS round_outcomes (
    plan_hash TEXT NOT NULL, round INTEGER NOT NULL, attempt INTEGER NOT NULL, silo_id TEXT NOT NULL,
    outcome TEXT NOT NULL, code TEXT, message TEXT, recorded_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS privacy_declarations (
    plan_hash TEXT NOT NULL, round INTEGER NOT NULL, silo_id TEXT NOT NULL, epsilon_spent REAL,
    epsilon_remaining REAL, delta REAL, recorded_at REAL NOT NULL, PRIMARY KEY (plan_hash, round, silo_id));
CREATE TABLE IF NOT EXISTS revoked_certificates (
    serial_hex TEXT PRIMARY KEY, silo_id TEXT NOT NULL, revoked_at REAL NOT NULL, reason TEXT NOT NULL);
"""


class SqliteStateStore:
    """SQLite in WAL mode with synchronous=FULL: a committed checkpoint survives power loss.
    One connection, shared by the server's threads under a lock (each statement commits)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SQLITE_SCHEMA)
        except (OSError, sqlite3.Error) as error:
            raise StateStoreUnavailable(f"SQLite state database {path} does not open: {error}") from None
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SqliteStateStore:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def _execute(self, query: str, parameters: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(query, parameters).fetchall()

    def start_plan(self, plan_hash: str, plan_json: bytes) -> None:
        self._execute(
            "INSERT INTO plans(plan_hash, plan_json, status, started_at) VALUES (?,?,'running',?) "
            "ON CONFLICT(plan_hash) DO UPDATE SET status='running', message=NULL",
            (plan_hash, plan_json, time.time()),
        )

    def finish_plan(self, plan_hash: str, status: str, message: str = "") -> None:
        self._execute(
            "UPDATE plans SET status=?, finished_at=?, message=? WHERE plan_hash=?",
            (status, time.time(), message, plan_hash),
        )

    def plan_status(self, plan_hash: str) -> str | None:
        rows = self._execute("SELECT status FROM plans WHERE plan_hash=?", (plan_hash,))
        return rows[0][0] if rows else None

    def save_checkpoint(self, plan_hash: str, round_number: int, state: list[NDArray[Any]]) -> None:
        self._execute(
            "INSERT OR REPLACE INTO checkpoints(plan_hash, round, state, created_at) VALUES (?,?,?,?)",
            (plan_hash, round_number, encode_arrays(state), time.time()),
        )

    def latest_checkpoint(self, plan_hash: str) -> Checkpoint | None:
        rows = self._execute(
            "SELECT round, state FROM checkpoints WHERE plan_hash=? ORDER BY round DESC LIMIT 1", (plan_hash,)
        )
        return Checkpoint(plan_hash, rows[0][0], decode_arrays(rows[0][1])) if rows else None

    def latest_checkpoint_at(self, plan_hash: str, round_number: int) -> list[NDArray[Any]]:
        rows = self._execute("SELECT state FROM checkpoints WHERE plan_hash=? AND round=?", (plan_hash, round_number))
        if not rows:
            raise LookupError(f"no checkpoint for round {round_number} of plan {plan_hash[:12]}")
        return decode_arrays(rows[0][0])

    def record_outcome(
        self, plan_hash: str, round_number: int, attempt: int, silo_id: str, outcome: str,
        code: str = "", message: str = "",
    ) -> None:
        self._execute(
            "INSERT INTO round_outcomes VALUES (?,?,?,?,?,?,?,?)",
            (plan_hash, round_number, attempt, silo_id, outcome, code, message, time.time()),
        )

    def outcomes(self, plan_hash: str) -> list[OutcomeRow]:
        """In the order recorded (rowid breaks ties between equal timestamps)."""
        return self._execute(
            "SELECT round, attempt, silo_id, outcome, code, message FROM round_outcomes "
            "WHERE plan_hash=? ORDER BY recorded_at, rowid",
            (plan_hash,),
        )

    def record_declaration(self, plan_hash: str, round_number: int, silo_id: str, declaration: dict[str, float]) -> None:
        """A silo's own statement of privacy spent on the plan's dataset, as sent with its
        result; the aggregator cannot verify it, it keeps it for the coordinator to see."""
        self._execute(
            "INSERT OR REPLACE INTO privacy_declarations VALUES (?,?,?,?,?,?,?)",
            (plan_hash, round_number, silo_id, declaration.get("epsilon_spent"),
             declaration.get("epsilon_remaining"), declaration.get("delta"), time.time()),
        )

    def declarations(self, plan_hash: str | None = None) -> list[DeclarationRow]:
        """Latest declaration per (plan, silo): plan_hash, round, silo, ε spent, ε left, δ.
        (SQLite takes the bare columns from the row holding MAX(round).)"""
        query = (
            "SELECT plan_hash, MAX(round), silo_id, epsilon_spent, epsilon_remaining, delta FROM privacy_declarations"
            + (" WHERE plan_hash=?" if plan_hash else "") + " GROUP BY plan_hash, silo_id ORDER BY plan_hash, silo_id"
        )
        return self._execute(query, (plan_hash,) if plan_hash else ())

    def revoke(self, serial_hex: str, silo_id: str, reason: str) -> None:
        self._execute(
            "INSERT OR IGNORE INTO revoked_certificates VALUES (?,?,?,?)",
            (serial_hex, silo_id, time.time(), reason),
        )

    def is_revoked(self, serial_hex: str) -> bool:
        return bool(self._execute("SELECT 1 FROM revoked_certificates WHERE serial_hex=?", (serial_hex,)))


# The SQLite store's historical name; existing callers construct `StateStore(path)`.
StateStore = SqliteStateStore
