"""The ceiling benchmark (pipelines.fed_heart_disease_ceiling) reads training records only and
reports every candidate against the pooled logistic regression. Real data, read in place; the
tests skip without it (it is not shipped with the project)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from pipelines import fed_heart_disease as fhd
from pipelines import fed_heart_disease_ceiling as ceiling

pytestmark = pytest.mark.skipif(
    not all((fhd.DEFAULT_DATA / f"processed.{h}.data").is_file() for h in fhd.HOSPITALS),
    reason=f"Fed-Heart-Disease data not found in {fhd.DEFAULT_DATA} (shared data, not part of the repository)",
)


def test_the_validation_arrays_hold_the_training_records_only(tmp_path: Path) -> None:
    exports = fhd.write_exports(fhd.DEFAULT_DATA, tmp_path, 43)
    train, validation = ceiling.validation_arrays(exports, 0)
    for name, (train_size, _test_size) in fhd.EXPECTED_SIZES.items():
        assert len(train[name][1]) + len(validation[name][1]) == train_size  # no test record in either
        assert len(validation[name][1]) == math.ceil(0.25 * train_size)  # scikit-learn rounds the test share up
        assert train[name][0].shape[1] == fhd.WIDTH


def test_every_candidate_is_reported_against_the_pooled_logistic_regression(tmp_path: Path) -> None:
    out = tmp_path / "ceiling.json"
    assert ceiling.main(["--split-seeds", "43,44", "--repeats", "2", "--out", str(out)]) == 0
    document = json.loads(out.read_text())
    assert document["validation_splits"] == 4 and document["split_seeds"] == [43, 44]
    candidates = document["candidates"]
    assert set(candidates) == set(ceiling.CANDIDATES)
    assert "minus_reference" not in candidates[ceiling.REFERENCE]
    for name, entry in candidates.items():
        assert 0.5 < entry["mean_per_hospital_validation_accuracy"] <= 1.0, name
        if name != ceiling.REFERENCE:
            versus = entry["minus_reference"]
            assert versus["method"].startswith("paired") and len(versus["per_seed_differences"]) == 2
            assert versus["units"].startswith("split seeds")
    assert candidates["per_hospital_intercept"]["what"].startswith("NOT a global model")
    assert document["command"].endswith("--split-seeds 43,44 --repeats 2 --out " + str(out))


def test_one_split_seed_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        ceiling.main(["--split-seeds", "43,43", "--out", str(tmp_path / "x.json")])
    assert "at least two different seeds" in capsys.readouterr().err
