"""Training views: exactly the plan's features, standardised with train statistics only,
deterministic splits, and no way to reach a column outside the allow-list."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from silo_node.datasets.errors import FeatureNotAllowed
from silo_node.datasets.policy import DatasetPolicy
from silo_node.datasets.registry import DatasetRegistry

from .exports import HEART_POLICY, IDENTIFIER_POLICY, heart_csv, identifier_frame, write_csv
from .plans import HEART_FEATURES, make_plan


@pytest.fixture
def heart(registry: DatasetRegistry, tmp_path: Path) -> DatasetRegistry:
    registry.add("heart", heart_csv("cleveland", tmp_path / "cle.csv"), "tabular", DatasetPolicy.from_document(HEART_POLICY))
    return registry


def test_view_shapes_and_train_statistics(heart: DatasetRegistry) -> None:
    plan = make_plan()
    train = heart.training_view("heart", plan, "train")
    test = heart.training_view("heart", plan, "test")
    assert train.features.dtype == np.float32 and train.labels.dtype == np.float32
    assert train.features.shape == (train.n, plan.input_width) and train.labels.shape == (train.n, 1)
    assert train.n + test.n == 303 and test.n == 61
    assert train.columns == ("age", "sex", "cp=2", "cp=3", "cp=4", "trestbps", "chol", "thalach", "oldpeak")
    standardized = [0, 5, 6, 7, 8]
    np.testing.assert_allclose(train.features[:, standardized].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(train.features[:, standardized].std(axis=0, ddof=1), 1, atol=1e-4)  # sample std
    assert abs(test.features[:, standardized].mean()) > 1e-4  # test uses train statistics
    onehot = train.features[:, 2:5]
    assert set(np.unique(onehot)) <= {0.0, 1.0} and (onehot.sum(axis=1) <= 1).all()
    # Stratified: the positive share is about the same in both subsets.
    assert abs(train.labels.mean() - test.labels.mean()) < 0.03


def test_standardized_indicators_use_train_mean_and_sample_std(heart: DatasetRegistry) -> None:
    features = [dict(f) for f in HEART_FEATURES]
    for feature in features:
        if feature.get("transform") == "one_hot":
            feature["standardize_indicators"] = True
    plan = make_plan(features=features)
    plain = heart.training_view("heart", make_plan(), "train")
    train = heart.training_view("heart", plan, "train")
    test = heart.training_view("heart", plan, "test")
    plain_test = heart.training_view("heart", make_plan(), "test")
    for column in (2, 3, 4):  # cp=2, cp=3, cp=4
        indicator = plain.features[:, column].astype(np.float64)
        mean, std = indicator.mean(), indicator.std(ddof=1)
        np.testing.assert_allclose(train.features[:, column], (indicator - mean) / std, atol=1e-5)
        # The test subset is scaled with the TRAIN statistics, never its own.
        np.testing.assert_allclose(test.features[:, column], (plain_test.features[:, column] - mean) / std, atol=1e-5)
    assert train.columns == plain.columns


def test_standardize_indicators_is_refused_outside_one_hot() -> None:
    features = [dict(f) for f in HEART_FEATURES]
    features[0] = {**features[0], "standardize_indicators": True}
    with pytest.raises(ValueError, match="standardize_indicators is only for one_hot"):
        make_plan(features=features)


def test_split_is_deterministic_and_seeded_by_content(registry: DatasetRegistry, tmp_path: Path) -> None:
    policy = DatasetPolicy.from_document(HEART_POLICY)
    registry.add("a", heart_csv("cleveland", tmp_path / "a.csv"), "tabular", policy)
    registry.add("b", heart_csv("cleveland", tmp_path / "b.csv"), "tabular", policy)
    plan = make_plan()
    va, vb = (registry.training_view(n, plan, "test") for n in "ab")
    np.testing.assert_array_equal(va.features, vb.features)


def test_split_column_is_honoured(registry: DatasetRegistry, tmp_path: Path) -> None:
    path = heart_csv("switzerland", tmp_path / "sw.csv")
    frame = pd.read_csv(path)
    frame["split"] = ["test" if i < 23 else "train" for i in range(len(frame))]
    frame.to_csv(path, index=False)
    registry.add("sw", path, "tabular", DatasetPolicy.from_document(HEART_POLICY))
    assert registry.training_view("sw", make_plan(), "test").n == 23
    assert registry.training_view("sw", make_plan(), "train").n == 100


@pytest.mark.parametrize(
    ("change", "feature"),
    [
        ({"features": [*HEART_FEATURES, {"name": "slope", "transform": "identity"}]}, "slope"),
        ({"features": [*HEART_FEATURES, {"name": "ssn", "transform": "identity"}]}, "ssn"),
        ({"features": [{"name": "restecg", "transform": "standardize"}]}, "restecg"),
        ({"features": [{"name": "cp", "transform": "one_hot", "categories": ["4", "9"]}]}, "cp"),
        ({"label": {"name": "chol", "positive_values": ["1"]}, "features": [{"name": "age", "transform": "identity"}]}, "chol"),
    ],
)
def test_plans_outside_the_allow_list_are_refused(heart: DatasetRegistry, change: dict, feature: str) -> None:
    with pytest.raises(FeatureNotAllowed) as caught:
        heart.training_view("heart", make_plan(**change), "train")
    assert caught.value.feature == feature and feature in str(caught.value)
    assert isinstance(caught.value, PermissionError)


def test_generalised_identifiers_reach_training_only_as_generalised(registry: DatasetRegistry, tmp_path: Path) -> None:
    registry.add("ids", write_csv(identifier_frame(), tmp_path / "ids.csv"), "tabular", DatasetPolicy.from_document(IDENTIFIER_POLICY))
    plan = make_plan(
        features=[
            {"name": "birth_date", "transform": "year"},
            {"name": "admission_date", "transform": "year"},
            {"name": "age", "transform": "identity"},
            {"name": "zip", "transform": "one_hot", "categories": ["021", "000"]},
            {"name": "sex", "transform": "one_hot", "categories": ["F", "M"]},
            {"name": "bmi", "transform": "standardize"},
        ],
        label={"name": "outcome", "positive_values": ["1"]},
    )
    view = registry.training_view("ids", plan, "train")
    assert view.features.shape[1] == plan.input_width == 8
    assert set(np.unique(view.features[:, 0])) <= set(range(1940, 1990))
    assert view.features[:, 2].max() <= 90
    assert view.features[:, 3:5].sum() > 0


def test_tf_dataset_batches(heart: DatasetRegistry) -> None:
    view = heart.training_view("heart", make_plan(), "test")
    batches = list(view.to_tf_dataset(16, shuffle_seed=1))
    assert sum(int(x.shape[0]) for x, _ in batches) == view.n
    assert batches[0][0].shape[1] == view.features.shape[1]
