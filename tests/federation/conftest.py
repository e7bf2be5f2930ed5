"""Shared set-up for end-to-end federation tests: small tabular hospitals with known data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

FEATURES = ("f0", "f1", "f2", "f3")
DATASET = "toy"

TOY_POLICY: dict[str, Any] = {
    "features": {name: {"transforms": ["identity", "standardize"]} for name in FEATURES},
    "label": "outcome",
    "split": {"holdout_fraction": 0.25},
}

OPEN_APPROVAL_POLICY: dict[str, Any] = {
    "auto_approve": True,
    "require_dp": False,
    "require_secure_aggregation": False,
}


def toy_plan(rounds: int = 3, min_silos: int = 3, deadline_s: float = 60.0, **overrides: Any) -> dict[str, Any]:
    plan = {
        "name": "toy",
        "dataset": DATASET,
        "model": {"id": "logistic_regression"},
        "features": [{"name": name, "transform": "identity"} for name in FEATURES],
        "label": {"name": "outcome", "positive_values": ["1"]},
        "client_optimizer": {"name": "sgd", "learning_rate": 0.2},
        "server_optimizer": {"name": "sgd", "learning_rate": 1.0},
        "local_epochs": 1,
        "batch_size": 8,
        "rounds": rounds,
        "min_silos_per_round": min_silos,
        "round_deadline_s": deadline_s,
        "seeds": {"model_init": 3, "data_order": 4},
    }
    return plan | overrides


def write_toy_export(path: Path, rows: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, len(FEATURES))).round(4)
    logit = x @ np.array([1.5, -1.0, 0.5, 0.0]) + 0.2
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame(x, columns=list(FEATURES))
    frame["outcome"] = y
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return path


@pytest.fixture()
def write_plan(tmp_path: Path):
    def write(document: dict[str, Any], name: str = "plan.json") -> Path:
        path = tmp_path / name
        path.write_text(json.dumps(document))
        return path

    return write
