"""Opens a silo's local components from its config: one SQLite database, the dataset store,
the approval policy, the egress record, the privacy ledger and the audit log."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from compliance.audit_log import AuditLog
from compliance.node_dir import NodePaths
from healthfed_common.silo_keys import SigningKeyInvalid, load_signing_key
from healthfed_common.startup_kit import SiloConfig
from silo_node.aggregator_witness import AggregatorLogWitness
from silo_node.approvals import PlanApprovals
from silo_node.datasets.registry import DatasetRegistry
from silo_node.egress import EgressRecord
from silo_node.errors import SiloNodeError
from silo_node.policy import ApprovalPolicy
from silo_node.privacy_ledger import PrivacyLedger
from silo_node.released_results import ReleasedResults, WitnessedCheckpoints
from silo_node.services import SiloServices
from silo_node.storage import make_private, open_silo_db, private_dir

DB_FILE = "silo.sqlite3"
IDENTITY_FILE = "node-identity"


@dataclass
class SiloNode(SiloServices):
    connection: sqlite3.Connection | None = None

    def close(self) -> None:
        if self.audit is not None:
            self.audit.close()
        if self.connection is not None:
            self.connection.close()


def audit_paths(state_dir: Path) -> tuple[Path, Path]:
    return state_dir / "audit" / "audit.sqlite3", state_dir / "audit" / "signing.key"


class NodeIdentityUnknown(SiloNodeError, LookupError):
    """A state directory used before any command opened it with the silo's config."""


def _identity(state: Path, silo_id: str | None) -> str:
    """The silo id is written into the state directory the first time the node is opened
    with its config, so later local commands sign audit entries as the same origin."""
    marker = state / IDENTITY_FILE
    if silo_id is not None:
        if marker.exists() and marker.read_text().strip() != silo_id:
            raise NodeIdentityUnknown(f"{state} belongs to silo {marker.read_text().strip()!r}, not {silo_id!r}")
        marker.write_text(silo_id + "\n")
        return silo_id
    if not marker.exists():
        raise NodeIdentityUnknown(f"{state} has no node identity yet; pass --config silo.yaml once")
    return marker.read_text().strip()


def open_audit_log(state: Path, silo_id: str | None = None) -> AuditLog | None:
    """The node's audit log, for local commands; None before the node has an identity.
    With `silo_id` (from the kit's silo.yaml) a state folder made without a kit is bound to
    that silo first (NodeIdentityUnknown if it belongs to another one)."""
    if silo_id is not None:
        state.mkdir(parents=True, exist_ok=True)
        _identity(state, silo_id)
    marker = state / IDENTITY_FILE
    if not marker.exists():
        return None
    db_path, key_path = audit_paths(state)
    return AuditLog.open(db_path, key_path, origin=f"silo:{marker.read_text().strip()}")


def open_silo_services(config: SiloConfig) -> SiloNode:
    """The node for `silo-node run`, with the hospital's signing key when the kit has one
    (None otherwise; the runner refuses secure-aggregation plans without it)."""
    node = open_silo_node(config.state_dir, config.silo_id, policy_file=config.policy_file)
    if config.signing_key.exists():
        try:
            node.signing_key = load_signing_key(config.signing_key)
        except SigningKeyInvalid:
            node.close()
            raise
    return node


def open_silo_node(state: Path, silo_id: str | None, *, policy_file: Path | None = None) -> SiloNode:
    """Opens the state folder; it and everything in it is made private to this account
    (folders 0700, files 0600), including files that existed before."""
    private_dir(state)
    silo_id = _identity(state, silo_id)
    connection = open_silo_db(state / DB_FILE)
    db_path, key_path = audit_paths(state)
    audit = AuditLog.open(db_path, key_path, origin=f"silo:{silo_id}")
    policy = ApprovalPolicy.from_yaml(policy_file) if policy_file else ApprovalPolicy()
    private_dir(state / "datasets")
    aggregator_log = AggregatorLogWitness(NodePaths(state).witness_db, audit, actor=f"silo:{silo_id}")
    make_private(state)
    return SiloNode(
        silo_id=silo_id,
        registry=DatasetRegistry(connection, state / "datasets", audit=audit),
        approvals=PlanApprovals(connection, policy, audit=audit),
        egress=EgressRecord(connection, audit=audit),
        ledger=PrivacyLedger(connection, audit=audit, actor=f"silo:{silo_id}"),
        released=ReleasedResults(connection),
        witnessed=WitnessedCheckpoints(connection),
        aggregator_log=aggregator_log,
        audit=audit,
        connection=connection,
        plan_cache_dir=state / "plan-cache",
    )
