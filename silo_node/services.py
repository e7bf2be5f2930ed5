"""The local components a silo's runner consults, in one container.

Kept apart from `silo_node.runner` so that commands which only open the silo's state
(`silo-node data`, `plans`, `ledger`, `egress`) do not load TensorFlow, which the runner needs
to build and run plans."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class SiloServices:
    """The local components the runner consults; built by the `run` command."""

    silo_id: str
    registry: Any
    approvals: Any
    egress: Any
    ledger: Any
    """The privacy ledger (silo_node.privacy_ledger.PrivacyLedger). Required, not optional:
    every release that depends on a dataset's records is charged or recorded in it before it
    leaves, so no runner exists that could release without one."""
    audit: Any = None
    released: Any = None
    witnessed: Any = None
    aggregator_log: Any = None
    """The silo's witness of the aggregator's audit log
    (silo_node.aggregator_witness.AggregatorLogWitness); None: the silo witnesses nothing."""
    signing_key: Any = None
    """The hospital's Ed25519PrivateKey (`signing.key` of the kit), or None when the kit has none."""
    plan_cache_dir: Path | None = None
    """STATE/plan-cache: traced plans kept so a restarted silo skips tracing (None: no cache)."""
