"""Files written whole or not at all, and an exclusive lock around a read-modify-write.

Why one module: certificates, enrolment records, model cards, compliance reports and
benchmark results must never be left half-written by a crash, and each writer had its own
copy of temp-file-and-rename, some without fsync (after a power cut a renamed file can be
empty), some with a fixed temporary name (two writers clobber each other's temporary file).

`write_atomically` writes to a uniquely named temporary file in the target's folder, flushes
and fsyncs it, renames it over the target (atomic on POSIX), and fsyncs the folder so the
rename itself survives a crash. The new file gets the mode a plain `open(..., "w")` would
give it (0666 less the umask) unless `mode` is given: switching writers to this helper must
not change who can read a certificate. On any error the temporary file is removed and the
previous file, if any, is left as it was.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
from collections.abc import Iterator
from pathlib import Path


def write_atomically(path: Path, data: bytes | str, *, mode: int = 0o666) -> None:
    """Replace `path` with `data` (str is written as UTF-8) whole or not at all.

    `mode` is passed to the creating `open`, so the umask applies as for any new file; give
    0o600 for a file only this account may read. The folder must exist."""
    path = Path(path)
    content = data.encode("utf-8") if isinstance(data, str) else data
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    """Make a rename inside `folder` durable (the folder's entry list is what changed). Some
    file systems (FUSE, virtiofs, some network mounts) cannot fsync a folder: the file is
    already in place then, so that refusal is not an error of the write."""
    descriptor = os.open(folder if str(folder) else ".", os.O_RDONLY)
    try:
        os.fsync(descriptor)
    except OSError as error:
        if error.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def exclusive_lock(lock_file: Path) -> Iterator[None]:
    """Hold an exclusive advisory lock (flock) on `lock_file`, created if needed, for the
    block: processes that read, merge and rewrite the same files take turns instead of
    losing each other's update. Released when the block ends, or when the process dies."""
    lock_file = Path(lock_file)
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
