"""The silo as a witness of the aggregator's audit log.

Why: the coordinator runs the aggregator and is the party hospitals fear. Its audit log is
tamper-evident only if checkpoints of it are held by someone the coordinator cannot edit.
Each time the aggregator accepts this silo's checkpoint, it answers with its own latest signed
checkpoint and an RFC 9162 consistency proof from the last one this silo accepted. The silo
keeps it in STATE/audit/witness.sqlite3, the same append-only store the aggregator keeps of
its silos' checkpoints, so `compliance verify` of the aggregator's log against any silo's
store shows a rollback (newest entries removed together with their checkpoints) or a
rewritten history.

What is refused, and recorded in this silo's audit log as a serious failure
(`checkpoint.rejected`, with the reason): a checkpoint of another
origin, a bad signature, a key other than the one first seen (the aggregator's audit key is
pinned on first use, as the aggregator pins each silo's), a log that shrank, and a history
that does not extend the witnessed one. Accepted checkpoints are not also written to the
silo's log: the witness store is the record, and an entry per task would only grow the log.

What it does not cover: before the first checkpoint this silo accepts, nothing is pinned (a
coordinator that rewrote its log before any silo saw it is not caught), and a coordinator can
show different silos different histories; `compliance verify` reads every silo's store it is
given, so a fork shows when the officer checks against more than one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from compliance.audit_log import AuditLog
from compliance.checkpoints import SignedCheckpoint
from compliance.errors import CheckpointRejected, ComplianceError
from compliance.node_dir import AGGREGATOR_ORIGIN
from compliance.witness import WitnessStore
from healthfed_common.wire.messages import AggregatorCheckpoint

log = logging.getLogger("healthfed.silo")

_REASON_CHARS = 300


class AggregatorLogWitness:
    """Checks and stores the aggregator's checkpoints in this silo's witness database.

    The database is opened per call: the runner's thread owns the calls, and a connection
    kept open would be bound to whichever thread opened it. It is created when the node is
    opened, so the state folder's permissions (0600, set on every open) cover it from the start."""

    def __init__(self, db_path: Path, audit: AuditLog | None, actor: str) -> None:
        self._db_path = Path(db_path)
        self._audit = audit
        self._actor = actor
        WitnessStore.open(self._db_path).close()

    def witnessed_size(self) -> int:
        """The size of the aggregator's log at the last checkpoint this silo accepted (0
        before the first): what the aggregator's next answer must prove it extends."""
        with WitnessStore.open(self._db_path) as store:
            latest = store.latest(AGGREGATOR_ORIGIN)
        return 0 if latest is None else latest.size

    def accept(self, reply: AggregatorCheckpoint) -> str | None:
        """Store the aggregator's checkpoint if it extends the one witnessed before; otherwise
        record why in this silo's audit log and return the reason."""
        offered: dict[str, Any] = dict(reply.checkpoint)
        try:
            signed = SignedCheckpoint.from_dict(offered)
            if signed.origin != AGGREGATOR_ORIGIN:
                raise CheckpointRejected(
                    f"rejected a checkpoint of {signed.origin!r} offered as the aggregator's "
                    f"(its log's origin is {AGGREGATOR_ORIGIN!r})"
                )
            with WitnessStore.open(self._db_path) as store:
                last = store.latest(AGGREGATOR_ORIGIN)
                pinned = signed.public_key if last is None else last.public_key
                store.accept(signed, list(reply.consistency_proof), pinned)
        except ComplianceError as error:
            reason = str(error)[:_REASON_CHARS]
            self._record_refusal(offered, reason)
            return reason
        return None

    def _record_refusal(self, offered: dict[str, Any], reason: str) -> None:
        size = offered.get("size")
        detail = {
            "origin": str(offered.get("origin", ""))[:100],
            "size": size if isinstance(size, int) and not isinstance(size, bool) else None,
            "reason": reason,
        }
        log.error("CHECKPOINT_REJECTED: this silo refused the aggregator's audit-log checkpoint: %s", reason)
        if self._audit is not None:
            self._audit.record("checkpoint.rejected", actor=self._actor, outcome="serious_failure",
                               detail=detail)
