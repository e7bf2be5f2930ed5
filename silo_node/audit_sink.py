"""What silo components need of the node's audit log (compliance.audit_log.AuditLog),
as a protocol so each can be built and tested without opening a log."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class AuditSink(Protocol):
    def record(
        self, kind: str, *, actor: str, outcome: str = "success",
        entities: Mapping[str, Any] | None = None, detail: Mapping[str, Any] | None = None,
    ) -> object: ...
