"""Plan documents for the tests, built with the project's real Plan schema."""

from __future__ import annotations

from typing import Any

from healthfed_common.plan import Plan
from healthfed_common.silo_keys import encode_public_key, generate_signing_key

# Three hospitals' signing keys (generated once per test session): secure-aggregation plans
# name their cohort.
COHORT = [{"silo_id": silo, "signing_key": encode_public_key(generate_signing_key())}
          for silo in ("north", "south", "east")]

HEART_FEATURES: list[dict[str, Any]] = [
    {"name": "age", "transform": "standardize"},
    {"name": "sex", "transform": "identity"},
    {"name": "cp", "transform": "one_hot", "categories": ["2", "3", "4"]},
    {"name": "trestbps", "transform": "standardize"},
    {"name": "chol", "transform": "standardize"},
    {"name": "thalach", "transform": "standardize"},
    {"name": "oldpeak", "transform": "standardize"},
]


def make_plan(**overrides: Any) -> Plan:
    document: dict[str, Any] = {
        "name": "heart-lr",
        "dataset": "heart",
        "description": "Predicts heart disease from routine measurements.",
        "purpose": "Research on cardiac risk.",
        "model": {"id": "logistic_regression"},
        "features": HEART_FEATURES,
        "label": {"name": "num", "positive_values": ["1", "2", "3", "4"]},
        "client_optimizer": {"name": "sgd", "learning_rate": 0.1},
        "local_epochs": 1,
        "batch_size": 16,
        "rounds": 5,
        "min_silos_per_round": 2,
        "dp": {"target_epsilon": 3.0, "target_delta": 1e-5},
        "secure_aggregation": {"protocol": "secagg", "threshold": 2},
        "cohort": COHORT,
    }
    document.update(overrides)
    return Plan.model_validate(document)
