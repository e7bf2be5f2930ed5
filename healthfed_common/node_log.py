"""The node's log file: where TensorFlow's, absl's and gRPC's own output goes, so the console
shows only what HealthFed says to people.

Why a file descriptor swap and not only `TF_CPP_MIN_LOG_LEVEL`: TensorFlow's C++ runtime,
absl and gRPC's C core write straight to file descriptor 2, below Python; an environment
variable can silence some of it, but what it lets through (and everything it silences) is then
lost to the person debugging a node. So `route_noise_to_file` points descriptor 2 at the log
file and gives Python a `sys.stderr` on a duplicate of the original descriptor: HealthFed's own
messages (`refused [CODE]: ...`, log records) still reach the console, while C-level output
lands in the file. Python-level noise takes the logging path: `warnings` are routed to logging
(`logging.captureWarnings`), and the `tensorflow`, `absl` and `py.warnings` loggers write to
the file only. It must run before TensorFlow is imported (the CLI commands import it lazily).

The file is private to the node's account (0600, in a 0700 folder), like everything in a
state folder; it is appended to and moved aside once it passes `MAX_BYTES`.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import IO

MAX_BYTES = 20 * 1024 * 1024
NOISY_LOGGERS = ("tensorflow", "absl", "py.warnings", "h5py", "jax")
"""Loggers of libraries whose records are for debugging, not for the person at the console."""


def _open_private(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.is_file() and path.stat().st_size > MAX_BYTES:
        os.replace(path, path.with_name(path.name + ".1"))
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(descriptor, 0o600)
    return descriptor


def route_noise_to_file(path: Path) -> IO[str]:
    """Sends C-level stderr and the noisy libraries' log records to `path`; returns the
    console stream (Python's new `sys.stderr`) for HealthFed's own messages. Call once per
    process, before importing TensorFlow and before `configure_logging`."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # C++ INFO is not worth a disk write
    descriptor = _open_private(path)
    sys.stderr.flush()
    console_fd = os.dup(2)
    os.dup2(descriptor, 2)
    os.close(descriptor)
    console = os.fdopen(console_fd, "w", buffering=1, encoding=sys.stderr.encoding or "utf-8",
                        errors="backslashreplace")
    sys.stderr = console
    return console


def attach_log_file(path: Path) -> logging.Handler:
    """After `configure_logging`: every record also goes to `path`, and the noisy libraries'
    records (and Python warnings) go there only."""
    logging.captureWarnings(True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logging.getLogger().addHandler(handler)
    for name in NOISY_LOGGERS:
        logger = logging.getLogger(name)
        for existing in list(logger.handlers):
            logger.removeHandler(existing)
        logger.addHandler(handler)
        logger.propagate = False
    return handler
