"""The silo as a witness of the aggregator's audit log.

Why: the coordinator runs the aggregator and is the party hospitals fear. Its audit log is
tamper-evident only if checkpoints of it are held by someone the coordinator cannot edit.
Each time the aggregator accepts this silo's checkpoint, it answers with its own latest signed
checkpoint and an RFC 9162 consistency proof from the last one this silo accepted. The silo
keeps it in STATE/audit/witness.sqlite3, the same append-only store the aggregator keeps of
its silos' checkpoints, so `compliance verify` of the aggregator's log against any silo's
store shows a rollback (newest entries removed together with their checkpoints) or a
rewritten history.

Freshness: the answer also carries the aggregator's own log entry accepting this silo's
checkpoint (`checkpoint.witnessed` of exactly that origin, size and root) with its inclusion
proof in the handed checkpoint's tree. A checkpoint older than this exchange cannot include
it, so the coordinator cannot keep a silo on an old checkpoint while its log moves on: what a
silo witnesses reaches at least the coordinator's acknowledgment of the silo's latest checkpoint.

What is refused, and recorded in this silo's audit log as a serious failure
(`checkpoint.rejected`, with the reason): a checkpoint of another origin, a malformed one
(including a size beyond 2^63 - 1), a bad signature, a key other than the one first seen (the
aggregator's audit key is pinned on first use, as the aggregator pins each silo's), a log that
shrank, a history that does not extend the witnessed one, a missing or wrong acknowledgment,
and an accepted exchange with no checkpoint at all (withheld). Accepted checkpoints are not
also written to the silo's log: the witness store is the record, and an entry per task would
only grow the log.

What it does not cover: before the first checkpoint this silo accepts, nothing is pinned (a
coordinator that rewrote its log before any silo saw it is not caught); entries the
coordinator appends after its last exchange with a silo are witnessed by nobody until the next
one (`compliance verify` names them; the runner exchanges once more when a plan ends, so a
plan's evaluation and model export are covered); and a coordinator can show different silos different
histories, which shows only when the officer verifies against the stores of more than one.
"""

from __future__ import annotations

import logging
import sqlite3
import unicodedata
from pathlib import Path
from typing import Any

from compliance.audit_log import AuditLog
from compliance.checkpoints import MAX_SIZE, SignedCheckpoint
from compliance.entry import AuditEntry
from compliance.errors import CheckpointRejected, ComplianceError, InvalidProof
from compliance.merkle import leaf_hash, verify_inclusion
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

    def accept(self, reply: AggregatorCheckpoint, sent: SignedCheckpoint) -> str | None:
        """Store the aggregator's checkpoint if it includes the aggregator's acknowledgment of
        `sent` (the checkpoint this silo just handed over) and extends the one witnessed
        before; otherwise record why in this silo's audit log and return the reason."""
        offered: dict[str, Any] = dict(reply.checkpoint)
        try:
            signed = SignedCheckpoint.from_dict(offered)
            if signed.origin != AGGREGATOR_ORIGIN:
                raise CheckpointRejected(
                    f"rejected a checkpoint of {signed.origin!r} offered as the aggregator's "
                    f"(its log's origin is {AGGREGATOR_ORIGIN!r})"
                )
            _check_acknowledgment(reply, signed, sent)
            with WitnessStore.open(self._db_path) as store:
                last = store.latest(AGGREGATOR_ORIGIN)
                pinned = signed.public_key if last is None else last.public_key
                store.accept(signed, list(reply.consistency_proof), pinned)
        except (ComplianceError, sqlite3.Error, OverflowError, ValueError, TypeError) as error:
            # anything the coordinator sends is refused with a reason, never raised into the
            # work loop (a checkpoint it can sign is input like any other)
            reason = str(error)[:_REASON_CHARS] if isinstance(error, ComplianceError) else (
                f"the checkpoint could not be stored ({type(error).__name__})")
            self._record_refusal(offered, reason)
            return reason
        return None

    def withheld(self, sent: SignedCheckpoint) -> str:
        """The aggregator accepted `sent` but handed no checkpoint of its own (protocol 2
        always does): its log goes unwitnessed from here, which is recorded, not just logged."""
        reason = (f"the aggregator accepted this silo's checkpoint (size {sent.size}) but handed none "
                  "of its own: its audit log is not witnessed by this silo")
        self._record_refusal({"origin": AGGREGATOR_ORIGIN}, reason)
        return reason

    def _record_refusal(self, offered: dict[str, Any], reason: str) -> None:
        reason = _printable(reason)
        size = offered.get("size")
        detail = {
            "origin": _printable(str(offered.get("origin", ""))[:100]),
            "size": size if isinstance(size, int) and not isinstance(size, bool) and 0 <= size <= MAX_SIZE else None,
            "reason": reason,
        }
        log.error("CHECKPOINT_REJECTED: this silo refused the aggregator's audit-log checkpoint: %s", reason)
        if self._audit is not None:
            self._audit.record("checkpoint.rejected", actor=self._actor, outcome="serious_failure",
                               detail=detail)


def _printable(text: str) -> str:
    """`text` with every control or format character (newlines, bidi overrides) replaced by '?':
    a refusal quotes what the coordinator sent, and that text must not reshape the log's
    reports or the console it is printed to."""
    return "".join("?" if unicodedata.category(c).startswith("C") else c for c in text)


def _check_acknowledgment(reply: AggregatorCheckpoint, signed: SignedCheckpoint, sent: SignedCheckpoint) -> None:
    """The aggregator's log, as of `signed`, must hold its entry accepting `sent`: the entry
    is the aggregator's own `checkpoint.witnessed` record of exactly that checkpoint, at the
    index it names, and the inclusion proof places it in `signed`'s tree. Raises
    `CheckpointRejected` saying which part failed."""
    where = f"the aggregator's checkpoint of size {signed.size}"
    try:
        entry = AuditEntry.from_bytes(reply.acknowledgment, "the acknowledgment entry")
    except ComplianceError as error:
        raise CheckpointRejected(f"rejected {where}: {error}") from None
    if (entry.kind, entry.source, entry.outcome_name, entry.index) != (
            "checkpoint.witnessed", AGGREGATOR_ORIGIN, "success", reply.acknowledgment_index):
        raise CheckpointRejected(
            f"rejected {where}: entry {reply.acknowledgment_index} it offers is not its acceptance "
            f"of this silo's checkpoint (kind {entry.kind[:40]!r}, index {entry.index})")
    detail = entry.detail
    if (detail.get("origin"), detail.get("size"), detail.get("root_hash")) != (sent.origin, sent.size, sent.root_hash):
        raise CheckpointRejected(
            f"rejected {where}: its acknowledgment names another checkpoint than the one this silo "
            f"handed over (size {sent.size})")
    try:
        verify_inclusion(leaf_hash(reply.acknowledgment), reply.acknowledgment_index, signed.size,
                         list(reply.inclusion_proof), signed.root)
    except InvalidProof as error:
        raise CheckpointRejected(
            f"rejected {where}: it does not include its acknowledgment of this silo's checkpoint "
            f"(entry {reply.acknowledgment_index}): {error}") from None
