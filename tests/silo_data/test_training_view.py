"""Training views: exactly the plan's features, standardised with train statistics only (non-DP
plans) or with the policy's public bounds only (DP plans: nothing computed from other
records), deterministic splits, and no way to reach a column outside the allow-list."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from silo_node.datasets.errors import FeatureNotAllowed, NonPrivatePreprocessing, PolicyInvalid
from silo_node.datasets.minimisation import SPLIT_COLUMN, check_plan
from silo_node.datasets.policy import DatasetPolicy
from silo_node.datasets.registry import DatasetRegistry
from silo_node.datasets.view import tabular_view

from .exports import HEART_POLICY, IDENTIFIER_POLICY, heart_csv, identifier_frame, write_csv
from .plans import HEART_FEATURES, make_plan


@pytest.fixture
def heart(registry: DatasetRegistry, tmp_path: Path) -> DatasetRegistry:
    registry.add("heart", heart_csv("cleveland", tmp_path / "cle.csv"), "tabular", DatasetPolicy.from_document(HEART_POLICY))
    return registry


def test_view_shapes_and_train_statistics(heart: DatasetRegistry) -> None:
    plan = make_plan(dp=None)
    train = heart.training_view("heart", plan, "train")
    test = heart.training_view("heart", plan, "test")
    assert train.features.dtype == np.float32 and train.labels.dtype == np.float32
    assert train.features.shape == (train.n, plan.input_width) and train.labels.shape == (train.n, 1)
    assert train.n + test.n == 303 and abs(test.n - 0.2 * 303) <= 3 * (303 * 0.2 * 0.8) ** 0.5  # per-record draw
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
    plan = make_plan(features=features, dp=None)
    plain = heart.training_view("heart", make_plan(dp=None), "train")
    train = heart.training_view("heart", plan, "train")
    test = heart.training_view("heart", plan, "test")
    plain_test = heart.training_view("heart", make_plan(dp=None), "test")
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


# --- DP plans: public bounds only ----------------------------------------------------------
HEART_BOUNDS = {"age": (0, 100), "trestbps": (80, 220), "chol": (100, 600), "thalach": (60, 220), "oldpeak": (-3, 7)}


def test_dp_view_clamps_and_scales_with_the_policys_public_bounds(heart: DatasetRegistry) -> None:
    dp_plan = make_plan()
    assert dp_plan.dp is not None
    raw = heart.training_view("heart", make_plan(dp=None, features=[
        {**f, "transform": "identity"} if f.get("transform") == "standardize" else f for f in HEART_FEATURES]), "train")
    view = heart.training_view("heart", dp_plan, "train")
    assert view.columns == raw.columns
    for index, name in enumerate(view.columns):
        if name in HEART_BOUNDS:
            low, high = HEART_BOUNDS[name]
            expected = (np.clip(raw.features[:, index], low, high) - (low + high) / 2) / ((high - low) / 2)
            np.testing.assert_allclose(view.features[:, index], expected, atol=1e-6)
            assert view.features[:, index].min() >= -1 and view.features[:, index].max() <= 1
        else:  # identity and one-hot columns are the record's own values
            np.testing.assert_array_equal(view.features[:, index], raw.features[:, index])


def _toy_frame(chol: list[float | None]) -> pd.DataFrame:
    n = len(chol)
    return pd.DataFrame({"chol": chol, "num": ["1" if i % 2 else "0" for i in range(n)], SPLIT_COLUMN: ["train"] * n})


TOY_POLICY = DatasetPolicy.from_document(
    {"features": {"chol": {"transforms": ["standardize"], "bounds": [100, 600]}}, "label": "num"})


def _toy_plan(dp: bool) -> object:
    return make_plan(features=[{"name": "chol", "transform": "standardize"}],
                     **({} if dp else {"dp": None}))


def test_one_outlier_record_moves_no_other_record_under_dp() -> None:
    """The attack of the review: replace one record by chol = 9999. Under a DP plan every
    OTHER record's features stay exactly the same (the sensitivity stays the clipping bound);
    the non-DP view (train mean/std) moves all of them -- which is why DP plans never use it."""
    values: list[float | None] = [180.0, 220.0, 250.0, 199.0, 305.0, 240.0, None, 210.0]
    neighbour = [*values[:-1], 9999.0]
    dp_before = tabular_view("t", _toy_frame(values), _toy_plan(True), "train", TOY_POLICY).features
    dp_after = tabular_view("t", _toy_frame(neighbour), _toy_plan(True), "train", TOY_POLICY).features
    np.testing.assert_array_equal(dp_before[:-1], dp_after[:-1])
    assert dp_after[-1, 0] == 1.0  # clamped to the public upper bound
    assert dp_before[6, 0] == 0.0  # missing -> the public centre 350
    plain_before = tabular_view("t", _toy_frame(values), _toy_plan(False), "train", TOY_POLICY).features
    plain_after = tabular_view("t", _toy_frame(neighbour), _toy_plan(False), "train", TOY_POLICY).features
    assert np.all(np.abs(plain_before[:6] - plain_after[:6]) > 0.05)  # record 6 is missing: mean-imputed, centred at 0


def test_a_non_dp_plan_asking_for_public_bounds_gets_the_dp_view() -> None:
    """`preprocessing: public_bounds` without DP: every hospital scales alike with the public
    ranges, and (as under DP) an outlier record moves no other record's features."""
    values: list[float | None] = [180.0, 220.0, 250.0, 199.0, 305.0, 240.0, None, 210.0]
    neighbour = [*values[:-1], 9999.0]
    public = make_plan(features=[{"name": "chol", "transform": "standardize"}], dp=None, preprocessing="public_bounds")
    before = tabular_view("t", _toy_frame(values), public, "train", TOY_POLICY).features
    after = tabular_view("t", _toy_frame(neighbour), public, "train", TOY_POLICY).features
    np.testing.assert_array_equal(before, tabular_view("t", _toy_frame(values), _toy_plan(True), "train", TOY_POLICY).features)
    np.testing.assert_array_equal(before[:-1], after[:-1])
    assert after[-1, 0] == 1.0 and before[6, 0] == 0.0
    with pytest.raises(NonPrivatePreprocessing, match="public_bounds"):
        tabular_view("t", _toy_frame(values), public, "train", None)


def test_a_public_bounds_plan_cannot_smuggle_in_a_private_statistic() -> None:
    no_bounds = DatasetPolicy.from_document({"features": {"chol": {"transforms": ["standardize"]}}, "label": "num"})
    public = make_plan(features=[{"name": "chol", "transform": "standardize"}], dp=None, preprocessing="public_bounds")
    with pytest.raises(NonPrivatePreprocessing, match="public_bounds preprocessing can standardise only with public"):
        tabular_view("t", _toy_frame([200.0, 300.0]), public, "train", no_bounds)
    policy = DatasetPolicy.from_document(HEART_POLICY)
    features = [{**f, "standardize_indicators": True} if f.get("transform") == "one_hot" else f for f in HEART_FEATURES]
    with pytest.raises(NonPrivatePreprocessing, match="standardize_indicators"):
        check_plan(make_plan(features=features, dp=None, preprocessing="public_bounds"), policy)


def test_dp_view_imputes_the_public_value_not_the_train_mean() -> None:
    policy = DatasetPolicy.from_document(
        {"features": {"chol": {"transforms": ["standardize"], "bounds": [100, 600], "impute": 200}}, "label": "num"})
    features = tabular_view("t", _toy_frame([300.0, None, 500.0]), _toy_plan(True), "train", policy).features
    assert features[1, 0] == pytest.approx((200 - 350) / 250)
    centre = tabular_view("t", _toy_frame([300.0, None, 500.0]), _toy_plan(True), "train", TOY_POLICY).features
    assert centre[1, 0] == 0.0  # default: the centre of the public bounds
    plain = tabular_view("t", _toy_frame([300.0, None, 500.0]), _toy_plan(False), "train", TOY_POLICY).features
    assert plain[1, 0] == pytest.approx(0.0, abs=1e-6) and plain[0, 0] < 0  # non-DP: train mean 400


def test_dp_plan_needing_a_private_statistic_is_refused_before_any_read() -> None:
    no_bounds = DatasetPolicy.from_document({"features": {"chol": {"transforms": ["standardize"]}}, "label": "num"})
    with pytest.raises(NonPrivatePreprocessing) as caught:
        check_plan(_toy_plan(True), no_bounds)  # type: ignore[arg-type]
    assert caught.value.code == "NON_PRIVATE_PREPROCESSING" and caught.value.feature == "chol"
    assert "bounds" in str(caught.value)
    with pytest.raises(NonPrivatePreprocessing):
        tabular_view("t", _toy_frame([300.0]), _toy_plan(True), "train", no_bounds)  # type: ignore[arg-type]
    with pytest.raises(NonPrivatePreprocessing):
        tabular_view("t", _toy_frame([300.0]), _toy_plan(True), "train")  # type: ignore[arg-type]
    check_plan(_toy_plan(False), no_bounds)  # type: ignore[arg-type]  # non-DP plans keep train statistics


def test_dp_plan_with_standardized_indicators_is_refused(heart: DatasetRegistry) -> None:
    features = [dict(f) for f in HEART_FEATURES]
    for feature in features:
        if feature.get("transform") == "one_hot":
            feature["standardize_indicators"] = True
    with pytest.raises(NonPrivatePreprocessing) as caught:
        heart.training_view("heart", make_plan(features=features), "train")
    assert caught.value.feature == "cp" and isinstance(caught.value, FeatureNotAllowed)
    heart.training_view("heart", make_plan(features=features, dp=None), "train")


@pytest.mark.parametrize("feature", [
    {"transforms": ["standardize"], "bounds": [5, 5]},
    {"transforms": ["standardize"], "bounds": [10, 1]},
    {"transforms": ["standardize"], "bounds": [0, 10], "impute": 11},
    {"transforms": ["one_hot"], "bounds": [0, 1]},
])
def test_policy_bounds_are_validated(feature: dict) -> None:
    with pytest.raises(PolicyInvalid):
        DatasetPolicy.from_document({"features": {"x": feature}, "label": "y"})


def test_holdout_of_each_record_depends_on_that_record_alone() -> None:
    """The split is preprocessing too: replacing or adding one record must not move any other
    record between train and test (a file-seeded or stratified split would)."""
    import pandas as pd

    from silo_node.datasets.minimisation import holdout, row_digests

    rng = np.random.default_rng(0)
    table = pd.DataFrame({"age": rng.integers(20, 90, 200).astype(str), "num": rng.integers(0, 2, 200).astype(str)})
    before = holdout(row_digests(table), 0.25)
    changed = table.copy()
    changed.loc[17, "age"] = "9999"
    extended = pd.concat([changed, pd.DataFrame({"age": ["41"], "num": ["1"]})], ignore_index=True)
    after = holdout(row_digests(extended), 0.25)
    others = [i for i in range(200) if i != 17]
    assert list(after[others]) == list(before[others])
    assert 0.15 < float(np.mean(before == "test")) < 0.35
