"""A second `open_silo_db` in a running silo (its Prometheus collector does one per scrape)
must not drop the first connection's SQLite locks.

Why this matters: POSIX advisory locks belong to the process and are released when ANY
descriptor of the file is closed. SQLite's WAL mode relies on them: a connection that closes
and can take an EXCLUSIVE lock on the database believes it is the last one, checkpoints and
DELETES the -wal and -shm files. If the running silo's locks were dropped, the next
`silo-node plans approve` (another process) deletes them under the silo: the silo goes on
reading and writing an orphaned, unlinked WAL -- it never sees the approval, and what it
commits afterwards (privacy-ledger charges included) is lost when it restarts. Found by the
README walk-through: the aggregator waited forever for an approval already given."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from silo_node.storage import open_silo_db

REPO = Path(__file__).resolve().parents[2]


def test_a_second_open_keeps_the_running_connection_on_the_live_wal(tmp_path: Path) -> None:
    path = tmp_path / "state" / "silo.sqlite3"
    running = open_silo_db(path)
    running.execute("CREATE TABLE plans (hash TEXT PRIMARY KEY, status TEXT)")
    running.execute("INSERT INTO plans VALUES ('abc', 'pending')")
    open_silo_db(path).close()  # what the metrics collector does on each scrape
    # another process (the CLI of `plans approve`) approves, then closes its connection
    approve = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1], isolation_level=None); "
               "c.execute(\"UPDATE plans SET status = 'approved'\"); c.close()")
    subprocess.run([sys.executable, "-c", approve, str(path)], check=True, timeout=60)
    assert running.execute("SELECT status FROM plans").fetchone() == ("approved",), \
        "the running connection no longer sees other processes' commits (its WAL was deleted under it)"
    running.execute("INSERT INTO plans VALUES ('def', 'charged')")  # e.g. a ledger charge
    fresh = open_silo_db(path)
    try:
        assert fresh.execute("SELECT count(*) FROM plans").fetchone() == (2,), "a commit went to an orphaned WAL"
    finally:
        fresh.close()
        running.close()


def test_a_new_database_is_still_created_private(tmp_path: Path) -> None:
    path = tmp_path / "state" / "silo.sqlite3"
    open_silo_db(path).close()
    assert path.stat().st_mode & 0o777 == 0o600
