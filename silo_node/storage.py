"""The silo's one SQLite database (WAL). Each component (datasets, approvals, privacy
ledger, egress record) owns its tables and creates them idempotently on open.

Also the rule for every path in a silo's state folder: folders 0700 and files 0600, because
it holds de-identified patient data, the privacy ledger and the audit key, which no other
account on the hospital's machine has any business reading."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def private_dir(path: Path) -> Path:
    """Creates `path` (and missing parents) 0700, and tightens it if it already existed."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    _chmod(path, DIR_MODE)
    return path


def _chmod(path: Path, mode: int) -> None:
    try:
        current = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(current.st_mode):
        return  # never follow a link out of the state folder
    if stat.S_IMODE(current.st_mode) != mode:
        os.chmod(path, mode)


def make_private(root: Path) -> None:
    """Every folder under `root` 0700, every file 0600 (links are left alone): files an older
    version or another tool wrote with a looser umask are tightened when the node opens."""
    if not root.is_dir():
        return
    _chmod(root, DIR_MODE)
    for directory, subdirectories, files in os.walk(root):
        for name in subdirectories:
            _chmod(Path(directory) / name, DIR_MODE)
        for name in files:
            _chmod(Path(directory) / name, FILE_MODE)


def open_silo_db(path: Path) -> sqlite3.Connection:
    """Opens (creating if needed) the silo database with durable settings: WAL journal,
    synchronous=FULL so a committed ledger charge survives power loss, foreign keys on.
    The file is created 0600 before SQLite opens it; SQLite gives its -wal and -shm files
    the database file's mode."""
    private_dir(path.parent)
    try:
        # Only when the file is new: closing ANY descriptor of an open database drops this
        # process's POSIX locks on it, and then another process closing its connection takes
        # itself for the last one and deletes the -wal/-shm files under the running silo
        # (tests/silo_data/test_storage_wal_locks.py).
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        pass
    for candidate in (path, *(path.with_name(path.name + suffix) for suffix in SQLITE_SIDE_FILES)):
        _chmod(candidate, FILE_MODE)
    connection = sqlite3.connect(path, timeout=30.0, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=FULL")
    connection.execute("PRAGMA foreign_keys=ON")
    connection.execute("PRAGMA busy_timeout=30000")
    return connection
