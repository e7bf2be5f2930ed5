"""The aggregator's audit log, its witness store of silo checkpoints, and the checkpoints
of its own log it hands each silo to witness in return (`exchange`).

gRPC handlers run on a thread pool and SQLite connections belong to one thread, so each
thread opens its own handle on the same files (the log serialises appends with
BEGIN IMMEDIATE and catches up with entries other handles wrote)."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

from compliance.audit_log import AuditLog
from compliance.checkpoints import SignedCheckpoint
from compliance.errors import CheckpointRejected, ComplianceError
from compliance.node_dir import AGGREGATOR_ORIGIN
from compliance.witness import WitnessStore
from healthfed_common.wire.messages import Ack, AggregatorCheckpoint, AuditCheckpoint

ORIGIN = AGGREGATOR_ORIGIN


def audit_paths(state_dir: Path) -> tuple[Path, Path, Path]:
    """(audit log, signing key, witness store) in the layout `compliance --node` reads."""
    audit = state_dir / "audit"
    return audit / "audit.sqlite3", audit / "signing.key", audit / "witness.sqlite3"


class AggregatorAudit:
    def __init__(self, state_dir: Path) -> None:
        self._log_path, self._key_path, self._witness_path = audit_paths(state_dir)
        self._keys_path = state_dir / "audit" / "silo-audit-keys.sqlite3"
        self._local = threading.local()
        self._lock = threading.Lock()
        self._handles: list[Any] = []
        self._log()  # create the log (and key) now, in the opening thread

    def _log(self) -> AuditLog:
        log = getattr(self._local, "log", None)
        if log is None:
            log = AuditLog.open(self._log_path, self._key_path, origin=ORIGIN)
            self._local.log = log
            with self._lock:
                self._handles.append(log)
        return log

    def _witness(self) -> WitnessStore:
        store = getattr(self._local, "witness", None)
        if store is None:
            store = WitnessStore.open(self._witness_path)
            self._local.witness = store
            with self._lock:
                self._handles.append(store)
        return store

    def record(self, kind: str, **kwargs: Any) -> int:
        return self._log().record(kind, **kwargs)

    def _pinned_key(self, silo_id: str, offered: bytes) -> bytes:
        """Trust on first use: the first checkpoint a silo sends (over its mutually
        authenticated connection) pins its audit key; a later key change is refused."""
        with sqlite3.connect(self._keys_path, timeout=30.0) as db:
            db.execute("CREATE TABLE IF NOT EXISTS silo_audit_key (silo_id TEXT PRIMARY KEY, public_key BLOB NOT NULL)")
            db.execute("INSERT OR IGNORE INTO silo_audit_key VALUES (?, ?)", (silo_id, offered))
            row = db.execute("SELECT public_key FROM silo_audit_key WHERE silo_id=?", (silo_id,)).fetchone()
        return bytes(row[0])

    def exchange(self, silo_id: str, message: AuditCheckpoint) -> Ack | AggregatorCheckpoint:
        """One checkpoint exchange with a silo: witness its checkpoint (refused: a coded Ack
        saying why), then answer with this log's latest signed checkpoint, the consistency proof
        from the size that silo last accepted, and this log's entry acknowledging the silo's
        checkpoint with its inclusion proof. Why the entry: it makes the answer fresh, since a
        checkpoint older than this exchange cannot include it, so the coordinator cannot keep
        handing a silo an old checkpoint while its log moves on."""
        index = self._witness_checkpoint(silo_id, dict(message.checkpoint), message.consistency_proof)
        if isinstance(index, str):
            return Ack(False, "CHECKPOINT_REJECTED", index)
        log = self._log()
        checkpoint = log.latest_checkpoint()  # record() stored one covering `index` with the entry
        assert checkpoint is not None and checkpoint.size > index
        witnessed = message.aggregator_witnessed_size
        consistency = (tuple(log.consistency_proof(witnessed, checkpoint.size))
                       if 0 < witnessed < checkpoint.size else ())
        return AggregatorCheckpoint(checkpoint.to_dict(), consistency, log.entry_bytes(index), index,
                                    tuple(log.inclusion_proof(index, checkpoint.size)))

    def _witness_checkpoint(self, silo_id: str, checkpoint: dict[str, Any], proof: tuple[bytes, ...]) -> int | str:
        """Stores a silo's signed checkpoint if it extends what we saw: the index of the
        `checkpoint.witnessed` entry recording it, or why not."""
        try:
            signed = SignedCheckpoint.from_dict(checkpoint)
        except (ComplianceError, KeyError, TypeError, ValueError) as error:
            return f"malformed checkpoint ({type(error).__name__})"
        if signed.origin != f"silo:{silo_id}":
            return f"checkpoint origin {signed.origin!r} is not this silo"
        try:
            self._witness().accept(signed, list(proof), self._pinned_key(silo_id, signed.public_key))
        except ComplianceError as error:
            self.record("checkpoint.witnessed", actor=ORIGIN, outcome="serious_failure",
                        detail={"origin": signed.origin, "size": signed.size, "root_hash": signed.root_hash,
                                "reason": str(error)[:300]})
            if isinstance(error, CheckpointRejected):  # the witness's own reason, sent to the silo
                return str(error)
            # anything else is this aggregator's trouble (e.g. its witness database): the silo
            # gets the code, the details stay in the aggregator's audit log
            return f"the aggregator could not witness the checkpoint ({error.code})"
        return self.record("checkpoint.witnessed", actor=ORIGIN,
                           detail={"origin": signed.origin, "size": signed.size, "root_hash": signed.root_hash})

    def close(self) -> None:
        with self._lock:
            for handle in self._handles:
                try:
                    handle.close()
                except (sqlite3.ProgrammingError, ComplianceError):
                    pass  # a handle of another (finished) thread
            self._handles.clear()
