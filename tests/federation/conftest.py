"""Shared set-up for end-to-end federation tests: small tabular hospitals with known data,
and nodes whose traced-plan caches already hold the plan they are about to run.

Why the caches are seeded: each node traces a plan it has not traced before in a fresh
process that imports TensorFlow (~10 s of CPU each, four at once on a two-core CI runner: about
half of every federation test). What a test of faults, refusals or secure aggregation checks
does not depend on who traced the graphs, so the plan is traced once per test session (by
`build_federated_computations` itself, in its fresh tracer process) and the verified entry is
copied into each node's OWN plan-cache folder before the aggregator starts
(`pipelines.local_federation.seed_plan_caches`, shared with the benchmarks). Every node still
loads the entry through its own cache, checks key, sources and digest, and compares the
fingerprint of what it loaded with its peer's, exactly as a restarted node does. Tests marked
`cold_plan_cache` start every node empty, so the nodes trace independently and must agree
(tests/federation/test_federation_end_to_end.py keeps its TFF-equivalence run cold).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines.local_federation import LocalFederation, seed_plan_caches

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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "cold_plan_cache: every node of the test's federations starts with an empty traced-plan cache")


@pytest.fixture(scope="session")
def traced_plans(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's plan cache: each plan traced once, its entry then copied into the nodes."""
    return tmp_path_factory.mktemp("traced-plans") / "plan-cache"


@pytest.fixture(autouse=True)
def _seeded_plan_caches(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every `LocalFederation.start_aggregator` of the test seeds the nodes' caches first,
    unless the test is marked `cold_plan_cache` or HEALTHFED_TEST_COLD_PLAN_CACHE=1 is set (every
    test cold, as before the seeding: to compare timings or rule the seeding out)."""
    cold = os.environ.get("HEALTHFED_TEST_COLD_PLAN_CACHE") == "1"
    if not cold and request.node.get_closest_marker("cold_plan_cache") is None:
        real_start = LocalFederation.start_aggregator

        def start_aggregator(self: LocalFederation, plan_path: Path, out_dir: Path, linger_s: float = 3.0) -> Any:
            seed_plan_caches(self, plan_path, request.getfixturevalue("traced_plans"))
            return real_start(self, plan_path, out_dir, linger_s)

        monkeypatch.setattr(LocalFederation, "start_aggregator", start_aggregator)
    yield


# What a test silo's kit says unless the test set it itself: the product defaults (poll every
# 2 s, back off up to 60 s) suit a hospital, but a silo started beside an aggregator that is
# still importing TensorFlow would back off past the moment it starts listening, and gRPC's own
# reconnection backoff follows max_backoff_s. No test's meaning depends on these two values;
# the tests of retries and backoff set their own (configure_silo) before starting the silo.
QUICK_SILO_SETTINGS: dict[str, float] = {"poll_interval_s": 0.5, "max_backoff_s": 2.0}


@pytest.fixture(autouse=True)
def _quick_test_silos(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    real_start = LocalFederation.start_silo

    def start_silo(self: LocalFederation, silo_id: str, **kwargs: Any) -> Any:
        config_path = self.kit(silo_id) / "silo.yaml"
        config = yaml.safe_load(config_path.read_text())
        missing = {key: value for key, value in QUICK_SILO_SETTINGS.items() if key not in config}
        if missing:
            self.configure_silo(silo_id, **missing)
        return real_start(self, silo_id, **kwargs)

    monkeypatch.setattr(LocalFederation, "start_silo", start_silo)
    yield
