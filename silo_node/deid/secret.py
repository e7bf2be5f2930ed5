"""The silo's de-identification secret: the HMAC key behind replacement UIDs and per-patient
date shifts. Kept only on the silo (file mode 0600); without it nobody can link a
replacement back to an original, and with it every dataset of the silo is pseudonymised
consistently."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

SECRET_BYTES = 32


def load_or_create_secret(path: Path) -> bytes:
    """Reads the key, creating it (atomically, owner-only) on first use."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(secrets.token_bytes(SECRET_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)  # fails if another process created it meanwhile
        except FileExistsError:
            pass
        finally:
            temporary.unlink(missing_ok=True)
        data = path.read_bytes()
    if len(data) != SECRET_BYTES:
        raise ValueError(f"{path}: de-identification secret must be {SECRET_BYTES} bytes")
    return data
