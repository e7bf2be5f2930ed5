"""Fixtures for the silo data layer: a real SQLite silo database and store folder."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from silo_node.datasets.registry import DatasetRegistry
from silo_node.storage import open_silo_db


class RecordingAudit:
    """An audit sink that keeps what it is given, to check which events the layer emits.
    (The real AuditLog has the same `record` signature.)"""

    def __init__(self) -> None:
        self.events: list[dict[str, object]] = []

    OUTCOMES = ("success", "minor_failure", "serious_failure", "major_failure")

    def record(self, kind: str, *, actor: str, outcome: str = "success", entities=None, detail=None) -> None:
        assert outcome in self.OUTCOMES, outcome  # the audit log's closed outcome vocabulary
        assert all(isinstance(v, (str, int, float)) for v in (entities or {}).values())
        self.events.append({"kind": kind, "actor": actor, "outcome": outcome, "entities": entities, "detail": detail})

    def kinds(self) -> list[str]:
        return [str(e["kind"]) for e in self.events]


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "silo-state"


@pytest.fixture
def conn(state_dir: Path) -> Iterator[sqlite3.Connection]:
    connection = open_silo_db(state_dir / "silo.sqlite3")
    yield connection
    connection.close()


@pytest.fixture
def audit() -> RecordingAudit:
    return RecordingAudit()


@pytest.fixture
def registry(conn: sqlite3.Connection, state_dir: Path, audit: RecordingAudit) -> DatasetRegistry:
    return DatasetRegistry(conn, state_dir / "datasets", audit=audit)
