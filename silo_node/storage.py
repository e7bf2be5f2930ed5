"""The silo's one SQLite database (WAL). Each component (datasets, approvals, privacy
ledger, egress record) owns its tables and creates them idempotently on open."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_silo_db(path: Path) -> sqlite3.Connection:
    """Opens (creating if needed) the silo database with durable settings: WAL journal,
    synchronous=FULL so a committed ledger charge survives power loss, foreign keys on."""
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA foreign_keys=ON")
    connection.execute("PRAGMA busy_timeout=30000")
    return connection
