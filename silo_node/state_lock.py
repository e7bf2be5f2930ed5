"""One silo process per state folder: an exclusive `flock` on STATE/silo.lock.

Why: two `silo-node run` processes on one folder would each poll, train and release for
the same plans. The ledger serialises their charges, but the released-results store, the
secure-aggregation sessions (in memory, per process) and the audit checkpoints handed to
the aggregator assume one process; two of them could release two different updates for a
round. The lock is held for the process's lifetime and released by the kernel when it
exits, however it exits (SIGKILL included), so a crash never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from silo_node.errors import SiloNodeError

LOCK_FILE = "silo.lock"


class StateDirLocked(SiloNodeError, BlockingIOError):
    """Another process holds this state folder."""

    code = "STATE_DIR_LOCKED"


class StateLock:
    """An exclusive, non-blocking lock on a state folder (`acquire`/`release`, or `with`)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> "StateLock":
        """Takes the lock or raises `StateDirLocked` naming the folder (and the holder's pid
        when it wrote one). Never waits: a second silo should stop, not queue."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip()
            os.close(fd)
            who = f" (process {holder})" if holder.isdigit() else ""
            raise StateDirLocked(
                f"state folder {self.state_dir} is in use by another silo-node process{who}; "
                "one silo process per state folder"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode("ascii"))
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "StateLock":
        return self.acquire()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
