"""Opens a silo's local components from its config: one SQLite database, the dataset store,
the approval policy, the egress record, the privacy ledger and the audit log."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from compliance.audit_log import AuditLog
from healthfed_common.startup_kit import SiloConfig
from silo_node.approvals import PlanApprovals
from silo_node.datasets.registry import DatasetRegistry
from silo_node.egress import EgressRecord
from silo_node.policy import ApprovalPolicy
from silo_node.runner import SiloServices
from silo_node.storage import open_silo_db

DB_FILE = "silo.sqlite3"


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


def open_silo_services(config: SiloConfig) -> SiloNode:
    state = config.state_dir
    state.mkdir(parents=True, exist_ok=True)
    connection = open_silo_db(state / DB_FILE)
    db_path, key_path = audit_paths(state)
    audit = AuditLog.open(db_path, key_path, origin=f"silo:{config.silo_id}")
    policy = ApprovalPolicy.from_yaml(config.policy_file) if config.policy_file else ApprovalPolicy()
    return SiloNode(
        silo_id=config.silo_id,
        registry=DatasetRegistry(connection, state / "datasets", audit=audit),
        approvals=PlanApprovals(connection, policy, audit=audit),
        egress=EgressRecord(connection),
        audit=audit,
        connection=connection,
    )
