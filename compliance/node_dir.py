"""Where a node keeps its compliance records, and which key a verifier should trust.

Layout of a node state directory (silo or aggregator)::

    DIR/audit/audit.sqlite3      the audit log (entries + signed checkpoints)
    DIR/audit/signing.key        Ed25519 signing key, PEM, mode 0600
    DIR/audit/signing.pub        its public key, PEM — what an officer pins
    DIR/audit/witness.sqlite3    checkpoints accepted from the other side: the aggregator's
                                 holds its silos' checkpoints, a silo's holds the aggregator's
    DIR/processing-record.yaml   GDPR Art. 30 record of processing
    DIR/silo.sqlite3             (silo) its database; table `witnessed_checkpoint` holds the
                                 size of the last checkpoint the aggregator accepted

A federation provisioned on one host (`aggregator provision --out F`) keeps silo state in
F/kits/<silo>/state and the aggregator's in F/aggregator/state; `witness_candidates` knows
that layout so `compliance verify` finds the witness databases on its own: the aggregator's
for a silo's log, every silo's for the aggregator's log.

Why one place: the CLI, the silo node and the aggregator must agree on these names.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from compliance.errors import KeyFileError, LogNotFound
from compliance.signing import load_public_key, public_key_path


AGGREGATOR_ORIGIN = "aggregator"
"""The origin the aggregator's audit log and its checkpoints name (a silo's is "silo:<id>")."""


@dataclass(frozen=True)
class NodePaths:
    """The compliance files of one node state directory."""

    root: Path

    @property
    def audit_db(self) -> Path:
        return self.root / "audit" / "audit.sqlite3"

    @property
    def signing_key(self) -> Path:
        return self.root / "audit" / "signing.key"

    @property
    def public_key(self) -> Path:
        return public_key_path(self.signing_key)

    @property
    def witness_db(self) -> Path:
        return self.root / "audit" / "witness.sqlite3"

    @property
    def processing_record(self) -> Path:
        return self.root / "processing-record.yaml"

    @property
    def silo_db(self) -> Path:
        return self.root / "silo.sqlite3"

    def witness_candidates(self) -> list[Path]:
        """Witness databases that may hold this node's checkpoints, in a single-host
        federation layout: the aggregator's (for a silo) or every silo's (for the aggregator).
        Never the node's own store: it holds what the node accepted from others, and a node
        that wrote its own checkpoints there would be vouching for itself."""
        root = self.root.resolve()
        candidates: list[Path] = []
        if root.name == "state" and root.parent.parent.name == "kits":
            candidates.append(root.parent.parent.parent / "aggregator" / "state" / "audit" / "witness.sqlite3")
        elif root.name == "state" and root.parent.name == "aggregator":
            kits = root.parent.parent / "kits"
            candidates += sorted(kits.glob("*/state/audit/witness.sqlite3")) if kits.is_dir() else []
        return candidates

    def acknowledged_size(self) -> int | None:
        """The size of the last checkpoint of this (silo) node the aggregator accepted, as the
        silo recorded it in its own database; None when the node keeps no such record."""
        if not self.silo_db.is_file():
            return None
        try:
            conn = sqlite3.connect(f"{self.silo_db.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
        except sqlite3.Error:
            return None
        try:
            row = conn.execute("SELECT size FROM witnessed_checkpoint WHERE id = 1").fetchone()
        except sqlite3.Error:
            return None  # no handover recorded yet (table absent) or an unreadable database
        finally:
            conn.close()
        return int(row[0]) if row and isinstance(row[0], int) else None

    def require_log(self) -> None:
        """Raise `LogNotFound` naming the directory if it holds no audit log."""
        if not self.root.is_dir():
            raise LogNotFound(f"node directory {self.root} does not exist")
        if not self.audit_db.is_file():
            raise LogNotFound(f"{self.root} holds no audit log (expected {self.audit_db})")


def trusted_public_key(
    pinned: Path | None, node: NodePaths | None
) -> tuple[bytes, str]:
    """The key to verify with, and a phrase saying where it came from.

    A key pinned by the officer (`--public-key`) wins: it is the only anchor an attacker who
    controls the node cannot swap. Otherwise the node's own `signing.pub`, then the public
    half of `signing.key` (if readable), are used — enough to catch edits by anyone without
    the key, and said so in the output.
    """
    if pinned is not None:
        return load_public_key(pinned), f"pinned key file {pinned}"
    if node is None:
        raise KeyFileError("no public key given: pass --public-key FILE (or --node DIR)")
    for candidate in (node.public_key, node.signing_key):
        if candidate.is_file():
            return load_public_key(candidate), f"the node's own key file {candidate}"
    raise KeyFileError(
        f"no key to verify with: {node.public_key} and {node.signing_key} are missing; "
        "pass --public-key FILE"
    )
