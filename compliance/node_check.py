"""Verify one node's log with every anchor that node has: the trusted key, a witness
database (given, or found beside the node), and the size the witness acknowledged.

Why one function for `verify` and `export`: the report states the same verdict the officer
gets from `compliance verify`, including whether a rollback could be ruled out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from compliance.log_store import RawLog, read_raw_log
from compliance.node_dir import NodePaths, trusted_public_key
from compliance.verify import Acknowledged, VerificationResult, verify_raw_log
from compliance.checkpoints import SignedCheckpoint
from compliance.errors import WitnessIsOwnStore
from compliance.witness import find_witnesses, read_witnessed


@dataclass(frozen=True)
class NodeCheck:
    """A verification result and where its anchors came from (for people)."""

    raw: RawLog
    result: VerificationResult
    key_source: str
    witness_source: str | None


def check_log(
    db: Path, node: NodePaths | None, public_key: Path | None, witness: Path | Sequence[Path] | None
) -> NodeCheck:
    """Verify the log at `db` (of `node`, when known) against every witness database given
    (or, with none given, every one found beside the node). Raises `LogCorrupt` for a damaged
    log, `LogNotFound`/`KeyFileError` for wrong inputs."""
    key, key_source = trusted_public_key(public_key, node)
    raw = read_raw_log(db, expected=node is not None)
    origin = raw.origin or ""
    given = [witness] if isinstance(witness, Path) else list(witness or [])
    for path in given:
        if node is not None and Path(path).resolve() == node.witness_db.resolve():
            raise WitnessIsOwnStore(
                f"{path} is this node's own witness store (the checkpoints it accepted from others), "
                "not a witness of its log: pass the other side's store")
    sources: list[tuple[Path, list[SignedCheckpoint]]]
    if given:
        sources, how = [(path, read_witnessed(path, origin)) for path in given], "given"
    elif node is not None:
        sources, how = find_witnesses(node.witness_candidates(), origin), "found automatically"
    else:
        sources, how = [], ""
    witnessed = [(str(path), checkpoints) for path, checkpoints in sources]
    witness_source = "; ".join(f"{path} ({how}, {len(checkpoints)} checkpoints of {origin})"
                               for path, checkpoints in sources) or None
    acknowledged = None
    if node is not None:
        size = node.acknowledged_size()
        if size is not None:
            acknowledged = Acknowledged(size, f"the silo's own record {node.silo_db.name}")
    result = verify_raw_log(raw, key, witnessed or None, acknowledged=acknowledged)
    return NodeCheck(raw, result, key_source, witness_source)
