"""Fed-Heart-Disease pipeline: the data protocol (fast) and one real federation run (slow).

The data are read in place from ../shared/data/fed_heart_disease/; without them the tests
skip (they are not shipped with the project)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines import fed_heart_disease as fhd

pytestmark = pytest.mark.skipif(
    not all((fhd.DEFAULT_DATA / f"processed.{h}.data").is_file() for h in fhd.HOSPITALS),
    reason=f"Fed-Heart-Disease data not found in {fhd.DEFAULT_DATA} (shared data, not part of the repository)",
)


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return fhd.write_exports(fhd.DEFAULT_DATA, tmp_path_factory.mktemp("fhd") / "exports")


def test_split_sizes_follow_the_protocol() -> None:
    for name, (n_train, n_test) in fhd.EXPECTED_SIZES.items():
        frame = fhd.protocol_frame(fhd.DEFAULT_DATA, name)
        assert (frame["split"] == "train").sum() == n_train, name
        assert (frame["split"] == "test").sum() == n_test, name
        assert not frame[["age", "cp", "trestbps", "chol", "restecg", "num"]].isin(["?"]).any().any()


def test_export_has_header_and_split_and_stays_out_of_the_repo(exports: dict[str, Path]) -> None:
    repo = Path(fhd.__file__).resolve().parents[1]
    for path in exports.values():
        assert repo not in path.resolve().parents
        header = path.read_text().splitlines()[0].split(",")
        assert header == [*fhd.COLUMNS, "split"]


def test_silo_view_gives_the_protocols_13_features(exports: dict[str, Path]) -> None:
    """The silo's own view (minimisation + tabular_view) of each export: 13 inputs, cp/restecg
    one-hot without their first level, EVERY input (dummies included) standardised with the
    hospital's train mean and sample std, labels num > 0 -- checked against a direct
    computation of the README's protocol."""
    from healthfed_common.plan import parse_plan

    plan = parse_plan(fhd.plan_document("no_dp", fhd.SELECTED["no_dp"], 0))
    assert plan.input_width == fhd.WIDTH
    for name, path in exports.items():
        table = fhd.stored_table(path)
        frame = fhd.protocol_frame(fhd.DEFAULT_DATA, name)
        train = (frame["split"] == "train").to_numpy()
        x_train, y_train = fhd.silo_arrays(table, plan, "train")
        x_test, y_test = fhd.silo_arrays(table, plan, "test")
        assert x_train.shape == (fhd.EXPECTED_SIZES[name][0], fhd.WIDTH)
        assert x_test.shape == (fhd.EXPECTED_SIZES[name][1], fhd.WIDTH)
        numbers = frame.drop(columns=["split"]).replace("?", np.nan)
        columns = []
        for feature in fhd.FEATURE_ORDER:
            values = numbers[feature].astype(float).to_numpy()
            raw = ([(values == float(c)).astype(float) for c in fhd.CATEGORIES[feature]]
                   if feature in fhd.CATEGORIES else [values])
            for column in raw:  # README step 5: every input, train mean, sample std (torch's default)
                std = column[train].std(ddof=1)
                columns.append((column - column[train].mean()) / (std if std > 0 else 1.0))
        expected = np.stack(columns, axis=1)
        np.testing.assert_allclose(x_train, expected[train], atol=1e-5)
        np.testing.assert_allclose(x_test, expected[~train], atol=1e-5)
        label = (numbers["num"].astype(float) > 0).to_numpy(dtype=np.float32)
        np.testing.assert_array_equal(y_train[:, 0], label[train])
        np.testing.assert_array_equal(y_test[:, 0], label[~train])


def test_validation_split_never_contains_test_rows(exports: dict[str, Path]) -> None:
    from silo_node.datasets.minimisation import SPLIT_COLUMN

    for name, path in exports.items():
        table = fhd.stored_table(path)
        validation = fhd.validation_table(table, seed=0)
        assert len(validation) == fhd.EXPECTED_SIZES[name][0]
        assert set(validation[SPLIT_COLUMN]) == {"train", "test"}


@pytest.mark.slow
def test_one_real_federation_run(tmp_path: Path) -> None:
    """One seed of the non-private setting through 4 silo processes and an aggregator."""
    out = tmp_path / "fhd.json"
    assert fhd.main(["--seeds", "1", "--settings", "no_dp", "--work", str(tmp_path / "work"),
                     "--out", str(out)]) == 0
    result = json.loads(out.read_text())["results"]["no_dp"]
    run = result["runs"][0]
    assert set(run["per_hospital_accuracy"]) == set(fhd.HOSPITALS)
    assert run["test_examples"] == {h: n for h, (_, n) in fhd.EXPECTED_SIZES.items()}
    assert 0.5 < result["mean_per_hospital_accuracy"] <= 1.0
