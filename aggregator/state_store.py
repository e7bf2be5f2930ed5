"""The aggregator's durable state in SQLite (WAL): plans, per-round checkpoints, round
outcomes and revoked certificates. A checkpoint is written in one transaction after each
round's update, so a restart resumes from the last completed round."""

from __future__ import annotations

import io
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_SCHEMA = """
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


def encode_arrays(arrays: list[np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, *arrays)
    return buffer.getvalue()


def decode_arrays(blob: bytes) -> list[np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
        return [archive[f"arr_{i}"] for i in range(len(archive.files))]


@dataclass(frozen=True)
class Checkpoint:
    plan_hash: str
    round: int
    state: list[np.ndarray]


class StateStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def start_plan(self, plan_hash: str, plan_json: bytes) -> None:
        self._db.execute(
            "INSERT INTO plans(plan_hash, plan_json, status, started_at) VALUES (?,?,'running',?) "
            "ON CONFLICT(plan_hash) DO UPDATE SET status='running', message=NULL",
            (plan_hash, plan_json, time.time()),
        )

    def finish_plan(self, plan_hash: str, status: str, message: str = "") -> None:
        self._db.execute(
            "UPDATE plans SET status=?, finished_at=?, message=? WHERE plan_hash=?",
            (status, time.time(), message, plan_hash),
        )

    def plan_status(self, plan_hash: str) -> str | None:
        row = self._db.execute("SELECT status FROM plans WHERE plan_hash=?", (plan_hash,)).fetchone()
        return row[0] if row else None

    def save_checkpoint(self, plan_hash: str, round_number: int, state: list[np.ndarray]) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO checkpoints(plan_hash, round, state, created_at) VALUES (?,?,?,?)",
            (plan_hash, round_number, encode_arrays(state), time.time()),
        )

    def latest_checkpoint(self, plan_hash: str) -> Checkpoint | None:
        row = self._db.execute(
            "SELECT round, state FROM checkpoints WHERE plan_hash=? ORDER BY round DESC LIMIT 1",
            (plan_hash,),
        ).fetchone()
        return Checkpoint(plan_hash, row[0], decode_arrays(row[1])) if row else None

    def latest_checkpoint_at(self, plan_hash: str, round_number: int) -> list[np.ndarray]:
        row = self._db.execute(
            "SELECT state FROM checkpoints WHERE plan_hash=? AND round=?", (plan_hash, round_number)
        ).fetchone()
        if row is None:
            raise LookupError(f"no checkpoint for round {round_number} of plan {plan_hash[:12]}")
        return decode_arrays(row[0])

    def record_outcome(
        self, plan_hash: str, round_number: int, attempt: int, silo_id: str, outcome: str,
        code: str = "", message: str = "",
    ) -> None:
        self._db.execute(
            "INSERT INTO round_outcomes VALUES (?,?,?,?,?,?,?,?)",
            (plan_hash, round_number, attempt, silo_id, outcome, code, message, time.time()),
        )

    def outcomes(self, plan_hash: str) -> list[tuple[int, int, str, str, str, str]]:
        return self._db.execute(
            "SELECT round, attempt, silo_id, outcome, code, message FROM round_outcomes "
            "WHERE plan_hash=? ORDER BY recorded_at",
            (plan_hash,),
        ).fetchall()

    def record_declaration(self, plan_hash: str, round_number: int, silo_id: str, declaration: dict[str, float]) -> None:
        """A silo's own statement of privacy spent on the plan's dataset, as sent with its
        result; the aggregator cannot verify it, it keeps it for the coordinator to see."""
        self._db.execute(
            "INSERT OR REPLACE INTO privacy_declarations VALUES (?,?,?,?,?,?,?)",
            (plan_hash, round_number, silo_id, declaration.get("epsilon_spent"),
             declaration.get("epsilon_remaining"), declaration.get("delta"), time.time()),
        )

    def declarations(self, plan_hash: str | None = None) -> list[tuple[str, int, str, float, float, float]]:
        """Latest declaration per (plan, silo): plan_hash, round, silo, ε spent, ε left, δ."""
        query = (
            "SELECT plan_hash, MAX(round), silo_id, epsilon_spent, epsilon_remaining, delta FROM privacy_declarations"
            + (" WHERE plan_hash=?" if plan_hash else "") + " GROUP BY plan_hash, silo_id ORDER BY plan_hash, silo_id"
        )
        return self._db.execute(query, (plan_hash,) if plan_hash else ()).fetchall()

    def revoke(self, serial_hex: str, silo_id: str, reason: str) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO revoked_certificates VALUES (?,?,?,?)",
            (serial_hex, silo_id, time.time(), reason),
        )

    def is_revoked(self, serial_hex: str) -> bool:
        return (
            self._db.execute(
                "SELECT 1 FROM revoked_certificates WHERE serial_hex=?", (serial_hex,)
            ).fetchone()
            is not None
        )
