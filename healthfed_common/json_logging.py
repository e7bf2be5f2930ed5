"""Structured logging for the node processes: one JSON object per line on stderr.

Why: container platforms (Docker, Kubernetes, Loki/Elastic shippers) parse one JSON object
per line without fragile regexes, and a record's fields (`silo_id`, `plan_hash`, `round`,
`code`) stay separate values instead of being folded into prose. The text format stays the
default for people running a node in a terminal.

Nothing here sends logs anywhere: records go to a local stream, and what a silo logs stays on
the silo. Fields passed with `extra={...}` are copied into the object when they are JSON
values (other values are written with `repr`, so a log call can never fail on them).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone
from typing import IO, Any

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRIBUTES = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
) | {"message", "asctime", "taskName"}

TEXT_FORMAT = "%(asctime)s {role} %(levelname)s %(name)s %(message)s"


def _json_value(value: Any) -> Any:
    """The value itself when json can write it, else its repr (a log line must never fail)."""
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON object: time (UTC, ISO 8601 with milliseconds), level,
    role, logger, message, the `extra=` fields, and the exception (type and traceback) if any."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self._role = role

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "role": self._role,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRIBUTES and key not in document:
                document[key] = _json_value(value)
        if record.exc_info and record.exc_info[0] is not None:
            document["exception_type"] = record.exc_info[0].__name__
            document["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        return json.dumps(document, ensure_ascii=False, separators=(",", ":"))


def configure_logging(
    json: bool, role: str, *, level: int = logging.INFO, stream: IO[str] | None = None
) -> logging.Handler:
    """Replaces the root logger's handlers with one handler on `stream` (default stderr), in
    JSON (`json=True`) or the human text format. `role` names the process in every line
    (e.g. "aggregator" or "silo st-marys"). Returns the handler so a caller (or a test) can
    remove it. Called once, at the start of a CLI command, never at import."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    if json:
        handler.setFormatter(JsonFormatter(role))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT.format(role=role.replace("%", "%%"))))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
