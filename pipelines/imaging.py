"""Imaging pipeline: a small CNN trained across hospitals from DICOM folders.

What is here now is the silo side: demo exports (pipelines.synthetic_dicom), registration
through the silo data layer (Annex E de-identification, burned-in quarantine), and the
image training view each silo hands to local training. The federation part (aggregator,
rounds, secure aggregation) is wired by the runner's owner: `imaging_plan()` is the plan to
send, and `silo_views()` is what each silo's runner will call.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from healthfed_common.plan import Plan
from pipelines.synthetic_dicom import write_federation
from silo_node.datasets.policy import DatasetPolicy
from silo_node.datasets.registry import DatasetRegistry
from silo_node.datasets.report import IngestionReport
from silo_node.datasets.view import TrainingView
from silo_node.storage import open_silo_db

DATASET = "chest_images"
IMAGE_POLICY: dict[str, Any] = {
    "features": {"image": {"transforms": ["identity"]}},
    "label": "label",
    "dicom": {"retain": ["patient_characteristics"], "image_size": 64, "on_reject": "skip"},
}


def imaging_plan(*, image_size: int = 32, rounds: int = 5, epsilon: float = 8.0) -> Plan:
    return Plan.model_validate({
        "name": "lesion-cnn", "dataset": DATASET,
        "purpose": "Detect a lesion on secondary-capture images (demo data).",
        "model": {"id": "small_cnn", "image_size": image_size},
        "features": [{"name": "image", "transform": "identity"}],
        "label": {"name": "label", "positive_values": ["1"]},
        "client_optimizer": {"name": "sgd", "learning_rate": 0.05},
        "local_epochs": 1, "batch_size": 16, "rounds": rounds, "min_silos_per_round": 2,
        "dp": {"target_epsilon": epsilon, "target_delta": 1e-5},
        "secure_aggregation": {"protocol": "secagg", "threshold": 2},
    })


def register_silo(state_dir: Path, export: Path) -> IngestionReport:
    """What hospital IT does once per silo: `silo-node data add chest_images EXPORT --kind dicom`."""
    conn: sqlite3.Connection = open_silo_db(state_dir / "silo.sqlite3")
    try:
        return DatasetRegistry(conn, state_dir / "datasets").add(
            DATASET, export, "dicom", DatasetPolicy.from_document(IMAGE_POLICY))
    finally:
        conn.close()


def silo_views(state_dir: Path, plan: Plan) -> tuple[TrainingView, TrainingView]:
    """(train, test) image views of one silo for `plan`."""
    conn = open_silo_db(state_dir / "silo.sqlite3")
    try:
        registry = DatasetRegistry(conn, state_dir / "datasets")
        return registry.training_view(DATASET, plan, "train"), registry.training_view(DATASET, plan, "test")
    finally:
        conn.close()


def prepare(out: Path, *, hospitals: int = 3, per_hospital: int = 60) -> list[Path]:
    """Generates exports and registers each in its own silo state folder; returns them."""
    states = []
    for summary in write_federation(out / "exports", hospitals=hospitals, per_hospital=per_hospital):
        state = out / "silos" / summary.folder.name
        print(register_silo(state, summary.folder))
        states.append(state)
    return states
