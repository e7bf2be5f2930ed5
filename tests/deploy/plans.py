"""A small valid plan for the aggregator entrypoint tests (same shape as pipelines/demo.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TOY_PLAN: dict[str, Any] = {
    "name": "deploy-toy",
    "dataset": "toy",
    "model": {"id": "logistic_regression"},
    "features": [{"name": f"f{i}", "transform": "identity"} for i in range(4)],
    "label": {"name": "outcome", "positive_values": ["1"]},
    "client_optimizer": {"name": "sgd", "learning_rate": 0.2},
    "server_optimizer": {"name": "sgd", "learning_rate": 1.0},
    "local_epochs": 1,
    "batch_size": 8,
    "rounds": 2,
    "min_silos_per_round": 1,
    "round_deadline_s": 30.0,
    "seeds": {"model_init": 3, "data_order": 4},
}


def write_plan(path: Path, **overrides: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(TOY_PLAN | overrides))
    return path
