"""The privacy spending silos declared to the aggregator, read from its state database.

Why the aggregator's report needs this: the aggregator charges no privacy ledger (silos do),
so its own log has no dp.charge events; what it holds is each silo's declaration, sent with
every DP round's result and kept by `StateStore.record_declaration` (`aggregator spending`
prints the same rows). The report states them as *declared* — the silos' ledgers are
authoritative — and says where they came from.

Read-only and without importing `aggregator` (the compliance tools run on any node): the
SQLite file is opened with `mode=ro`; the query is the one `declarations()` runs. A state
store in PostgreSQL is not read here; the report then says so and names the command.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from compliance.report.data import DeclaredSpending

STATE_FILE = "aggregator.sqlite3"


def read_declarations(node_dir: Path) -> tuple[tuple[DeclaredSpending, ...], str]:
    """(latest declaration per plan and silo, a phrase saying where they came from)."""
    path = Path(node_dir) / STATE_FILE
    if not path.is_file():
        return (), (f"No aggregator state database at {path} (a PostgreSQL state store is not "
                    "read by this report; run `aggregator spending --config aggregator.yaml`).")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
    except sqlite3.Error as exc:
        return (), f"The aggregator state database {path} could not be opened ({exc})."
    try:
        rows = conn.execute(
            "SELECT plan_hash, MAX(round), silo_id, epsilon_spent, epsilon_remaining, delta "
            "FROM privacy_declarations GROUP BY plan_hash, silo_id ORDER BY plan_hash, silo_id"
        ).fetchall()
    except sqlite3.Error:
        return (), f"The aggregator state database {path} holds no privacy declarations table."
    finally:
        conn.close()
    return (
        tuple(DeclaredSpending(str(p), "", str(s), int(r), _float(e), _float(rem), _float(d))
              for p, r, s, e, rem, d in rows),
        f"Declared by the silos with their round results, as kept in {path} (latest per plan and "
        "silo). Each silo's own privacy ledger is authoritative; this is what it declared.",
    )


def _float(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
