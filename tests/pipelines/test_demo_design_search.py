"""The demo design search (pipelines.demo_design_search) simulates the demo's DP-FedAvg in numpy:
its gradients, its DP-SGD step and its record of what was chosen must be what they claim."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from pipelines import demo, demo_reference, synthetic_ehr
from pipelines.demo_design_search import (
    CHOSEN_DESIGN,
    DESIGNS,
    SEARCH_LOG,
    dp_sgd_round,
    federated,
    hospitals,
    initial_weights,
    per_example_gradients,
    predict,
    round_weight,
    shipped_candidate,
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


def test_noise_is_sigma_c_over_the_expected_batch_whatever_the_sample() -> None:
    """With the gradients clipped to nothing, a step moves each weight by rate * N(0, (sigma C)^2) / (q n):
    the expected batch q n, not the realised one (which would leak who was sampled)."""
    rng = np.random.default_rng(7)
    x, y = rng.normal(size=(200, 40)), (rng.random(200) < 0.5).astype(float)
    weights = initial_weights(40, seed=1)
    clip, sigma, q = 1e-9, 1e9, 0.05  # sigma * clip = 1
    moved = dp_sgd_round(weights, x, y, rate=2.0, sigma=sigma, q=q, steps=1, rng=rng, clip=clip)
    step = np.concatenate([(a - b).ravel() for a, b in zip(moved, weights)])
    assert np.std(step) == pytest.approx(2.0 * sigma * clip / (q * 200), rel=0.1)


def test_the_server_weights_each_hospital_by_its_update_weight_not_its_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """The silo's update_weight is the sum of expected batches over its steps (client_work);
    with ceil(n / batch) steps that is not proportional to n, and the simulation must use it."""
    from healthfed_common.dp.accounting import silo_dp_parameters
    from healthfed_common.plan import parse_plan

    plan = parse_plan(demo.demo_plan())
    small, large = silo_dp_parameters(plan, 300), silo_dp_parameters(plan, 1300)
    assert round_weight(small) == pytest.approx(small.steps_per_round * small.expected_batch_size)
    assert round_weight(small) / round_weight(large) != pytest.approx(300 / 1300, rel=0.05)
    # and federated() averages with it, for every hospital in every round
    import pipelines.demo_design_search as search

    rng = np.random.default_rng(3)
    silos = {name: demo_reference.SiloArrays(rng.normal(size=(n, 3)), (rng.random(n) < 0.5).astype(int),
                                             rng.normal(size=(5, 3)), np.zeros(5, dtype=int))
             for name, n in (("a", 300), ("b", 70))}
    asked: list[int] = []
    monkeypatch.setattr(search, "round_weight", lambda p: asked.append(p.steps_per_round) or round_weight(p))
    document = demo.demo_plan(rounds=2) | {"batch_size": 64}
    federated(silos, document, np.random.default_rng(0))
    small_steps, large_steps = (silo_dp_parameters(parse_plan(document), n).steps_per_round for n in (70, 300))
    assert sorted(asked) == sorted([large_steps, small_steps] * 2)


def test_the_shipped_demo_is_the_searchs_choice() -> None:
    """Changing the demo's hospitals (case mix included) or plan without redoing the search fails here."""
    recorded = json.loads((REPO / "bench-results" / "demo_design_search.json").read_text())
    design = DESIGNS[CHOSEN_DESIGN]
    assert recorded["designs"][CHOSEN_DESIGN]["hospitals"] == [
        dataclasses.asdict(h) | {"chest_pain_mix": list(h.chest_pain_mix)} for h in synthetic_ehr.DEMO_HOSPITALS]
    assert design["intercept"] == synthetic_ehr.RISK_INTERCEPT
    plan = demo.demo_plan()
    candidate = shipped_candidate()
    assert any(CHOSEN_DESIGN in names and candidate in plans for names, plans in SEARCH_LOG)
    # and the committed search result chose exactly this design and plan
    assert recorded["chosen"]["design"] == CHOSEN_DESIGN
    assert {k: recorded["chosen"][k] for k in candidate} == candidate
    assert recorded["shipped_plan_matches_choice"] is True
    assert len(recorded["results"]) == sum(len(names) * len(plans) for names, plans in SEARCH_LOG)
    assert plan["client_optimizer"]["name"] == "sgd" and plan["server_optimizer"] == {"name": "sgd", "learning_rate": 1.0}


@pytest.mark.parametrize("name", sorted(DESIGNS))
def test_every_design_keeps_each_hospital_without_a_strong_factor(name: str) -> None:
    """Each hospital lacks one of the three strong factors (two in the "one strong factor" designs),
    and each factor is present at some hospital."""
    profiles = hospitals(DESIGNS[name])
    expected = 2 if DESIGNS[name]["one_factor_each"] else 1
    for profile in profiles:
        lacking = [profile.smoker_rate == 0, profile.diabetes_rate == 0, profile.chest_pain_mix[0] == 0]
        assert sum(lacking) == expected, profile
    assert all(p.smoker_rate > 0 for p in profiles) is False and any(p.smoker_rate > 0 for p in profiles)
    assert any(p.diabetes_rate > 0 for p in profiles) and any(p.chest_pain_mix[0] > 0 for p in profiles)
