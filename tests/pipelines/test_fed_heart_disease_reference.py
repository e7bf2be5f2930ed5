"""The Fed-Heart-Disease pooled reference and local-only models on a tiny synthetic table (no
shared data needed): the pooled model really is trained on the union of the hospitals'
training views and scored per hospital, each local-only model on its own records only."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from pipelines import fed_heart_disease as fhd
from pipelines.demo_reference import SiloArrays
from pipelines.fed_heart_disease_reference import accuracy, local_only, pooled_reference

HYPER = fhd.Hyper(rounds=10, local_epochs=1, batch_size=8, client_lr=0.5, kernel_initializer="zeros")


def _hospital(rng: np.random.Generator, n: int, flipped: bool) -> SiloArrays:
    """Label = sign of the first input (inverted when `flipped`), the other 12 inputs noise."""
    x = rng.normal(size=(2 * n, fhd.WIDTH)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.float32)
    if flipped:
        y = 1.0 - y
    return SiloArrays(x[:n], y[:n], x[n:], y[n:])


@pytest.fixture(scope="module")
def silos() -> dict[str, SiloArrays]:
    rng = np.random.default_rng(0)
    # "b" is small and its relation is the opposite of the two large hospitals'
    return {"a": _hospital(rng, 120, False), "b": _hospital(rng, 40, True), "c": _hospital(rng, 120, False)}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    return fhd.plan_document("no_dp", HYPER, 0)


def test_accuracy_thresholds_at_one_half() -> None:
    assert accuracy(np.array([1, 0, 1, 0]), np.array([0.5, 0.49, 0.2, 0.9])) == 0.5


def test_pooled_reference_trains_on_the_union_and_scores_each_hospital(silos: dict[str, SiloArrays],
                                                                       document: dict[str, Any]) -> None:
    pooled = pooled_reference(silos, document, seeds=[0, 1])
    assert pooled["trained_on"] == 280
    per_hospital = pooled["per_hospital_mean_over_seeds"]
    # the union is dominated by a and c: the pooled model follows them and fails b
    assert per_hospital["a"] > 0.85 and per_hospital["c"] > 0.85 and per_hospital["b"] < 0.2
    assert pooled["mean_per_hospital_accuracy"] == pytest.approx(np.mean(pooled["per_seed_mean_per_hospital_accuracy"]))
    assert len(pooled["per_seed_mean_per_hospital_accuracy"]) == 2
    assert pooled["sklearn_converged"]["per_hospital"]["b"] < 0.2


def test_local_only_models_see_only_their_own_records(silos: dict[str, SiloArrays], document: dict[str, Any]) -> None:
    local = local_only(silos, document, seeds=[0])
    assert local["trained_on"] == {"a": 120, "b": 40, "c": 120}
    # b's own model learns b's inverted relation: it could not with a's or c's records mixed in
    assert all(local["per_hospital_mean_over_seeds"][h] > 0.8 for h in "abc")


def test_per_hospital_table_puts_every_model_side_by_side() -> None:
    def entry(value: float) -> dict[str, Any]:
        return {"per_hospital_mean_over_seeds": {h: value for h in fhd.HOSPITALS}}

    results = {"no_dp": {**entry(0.7), "personalized": entry(0.8)}, "eps_1": entry(0.6)}
    references = {"local_only": entry(0.5), "pooled_reference": {"public_clinical_ranges": entry(0.65)}}
    table = fhd.per_hospital_table(results, references)
    assert table["va"] == {"no_dp": 0.7, "personalized": 0.8, "eps_1": 0.6, "local_only": 0.5,
                           "pooled_public_clinical_ranges": 0.65}
