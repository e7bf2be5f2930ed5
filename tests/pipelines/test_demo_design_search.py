"""The demo design search (pipelines.demo_design_search) simulates the demo's DP-FedAvg in numpy:
its gradients, its DP-SGD step and its record of what was chosen must be what they claim."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipelines import demo, synthetic_ehr
from pipelines.demo_design_search import (
    CHOSEN_DESIGN,
    DESIGNS,
    SEARCH_LOG,
    dp_sgd_round,
    hospitals,
    initial_weights,
    per_example_gradients,
    predict,
)

REPO = Path(__file__).resolve().parents[2]


def _loss(weights: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(predict(weights, x), 1e-12, 1 - 1e-12)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).sum())


def test_per_example_gradients_are_the_cross_entropy_gradients() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(5, 4)), np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    weights = initial_weights(4, seed=3)
    weights[1] += 0.1  # keep every ReLU away from its kink
    analytic = [g.sum(axis=0) for g in per_example_gradients(weights, x, y)]
    for index, w in enumerate(weights):
        numeric = np.zeros_like(w)
        for position in np.ndindex(w.shape):
            step = [v.copy() for v in weights]
            step[index][position] += 1e-6
            back = [v.copy() for v in weights]
            back[index][position] -= 1e-6
            numeric[position] = (_loss(step, x, y) - _loss(back, x, y)) / 2e-6
        np.testing.assert_allclose(analytic[index], numeric, rtol=1e-4, atol=1e-6)


def test_without_noise_or_clipping_a_full_batch_dp_step_is_a_gradient_step() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(20, 3)), (rng.random(20) < 0.4).astype(float)
    weights = initial_weights(3, seed=2)
    stepped = dp_sgd_round(weights, x, y, rate=0.5, sigma=0.0, q=1.0, steps=1, rng=rng, clip=1e9)
    for before, after, grad in zip(weights, stepped, per_example_gradients(weights, x, y)):
        np.testing.assert_allclose(after, before - 0.5 * grad.mean(axis=0), rtol=1e-10)


def test_clipping_bounds_what_one_record_can_move() -> None:
    """With sigma = 0 and q = 1, adding one extreme record moves the update by at most rate * C / n."""
    rng = np.random.default_rng(4)
    x, y = rng.normal(size=(30, 3)), (rng.random(30) < 0.5).astype(float)
    weights = initial_weights(3, seed=5)
    base = dp_sgd_round(weights, x, y, rate=1.0, sigma=0.0, q=1.0, steps=1, rng=rng, clip=0.5)
    x2, y2 = np.vstack([x[:-1], [[1e4, -1e4, 1e4]]]), y.copy()
    moved = dp_sgd_round(weights, x2, y2, rate=1.0, sigma=0.0, q=1.0, steps=1, rng=rng, clip=0.5)
    change = np.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(base, moved)))
    assert change <= 2 * 0.5 / 30 + 1e-12  # replace-one: the old record's and the new one's clipped terms


def test_the_shipped_demo_is_the_searchs_choice() -> None:
    """Changing the demo's hospitals or plan without redoing the search fails here."""
    design = DESIGNS[CHOSEN_DESIGN]
    shipped = hospitals(design)
    assert [h.patients for h in shipped] == [h.patients for h in synthetic_ehr.DEMO_HOSPITALS]
    assert [dict(vars(h), patients=0) for h in shipped] == [dict(vars(h), patients=0) for h in synthetic_ehr.DEMO_HOSPITALS]
    assert design["intercept"] == synthetic_ehr.RISK_INTERCEPT
    plan = demo.demo_plan()
    candidate = {"batch_size": plan["batch_size"], "learning_rate": plan["client_optimizer"]["learning_rate"],
                 "rounds": plan["rounds"]}
    assert any(CHOSEN_DESIGN in names and candidate in plans for names, plans in SEARCH_LOG)
    # and the committed search result chose exactly this design and plan
    recorded = json.loads((REPO / "bench-results" / "demo_design_search.json").read_text())
    assert recorded["chosen"]["design"] == CHOSEN_DESIGN
    assert {k: recorded["chosen"][k] for k in candidate} == candidate
    assert recorded["shipped_plan_matches_choice"] is True
    assert len(recorded["results"]) == sum(len(names) * len(plans) for names, plans in SEARCH_LOG)
    assert plan["client_optimizer"]["name"] == "sgd" and plan["server_optimizer"] == {"name": "sgd", "learning_rate": 1.0}


@pytest.mark.parametrize("name", sorted(DESIGNS))
def test_every_design_keeps_each_hospital_without_a_strong_factor(name: str) -> None:
    for profile in hospitals(DESIGNS[name]):
        lacking = [profile.smoker_rate == 0, profile.diabetes_rate == 0, profile.chest_pain_mix[0] == 0]
        assert sum(lacking) >= 1, profile
