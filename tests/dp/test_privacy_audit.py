"""Empirical privacy audit of a silo's DP-SGD round (pipelines.privacy_audit): the lower bound
on epsilon measured by a worst-case canary stays below the claimed epsilon when the silo
preprocesses with public bounds, and exceeds it with the old train-set standardisation (the
negative control: the audit can fail).

Cost: one plan build (~25 s wall, a fresh process) and 2 x 140 runs of the real `work` graph
(~12 s CPU each audit on one core)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from healthfed_common.dp.audit import clopper_pearson, epsilon_lower_bound

# 60 runs per side: perfect separation then proves eps >= 2.38 at 95% (5 thresholds), above the
# claimed 2; a correct round stays near 0.
SETTING_KWARGS = dict(claimed_epsilon=2.0, delta=1e-5, runs_per_side=60, calibration_runs=20)


def test_clopper_pearson_matches_scipy() -> None:
    for k, n in [(0, 100), (3, 100), (50, 100), (100, 100)]:
        low, high = clopper_pearson(k, n, 0.025)
        interval = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
        assert low == pytest.approx(interval.low, abs=1e-9) and high == pytest.approx(interval.high, abs=1e-9)


def test_lower_bound_of_perfect_separation_is_the_closed_form() -> None:
    """100 runs per side, all separated, one threshold: eps = log((1-d) CP_low(100/100) / CP_high(0/100))."""
    bound = epsilon_lower_bound(np.ones(100), np.zeros(100), [0.5], delta=0.0)
    low, _ = clopper_pearson(100, 100, 0.025)
    _, high = clopper_pearson(0, 100, 0.025)
    assert bound.epsilon_lower_bound == pytest.approx(math.log(low / high))
    assert 2.5 < bound.epsilon_lower_bound < 3.5


def test_lower_bound_of_identical_distributions_is_small() -> None:
    rng = np.random.default_rng(0)
    bound = epsilon_lower_bound(rng.normal(size=500), rng.normal(size=500), np.linspace(-2, 2, 9), delta=1e-5)
    assert bound.epsilon_lower_bound < 0.5


@pytest.fixture(scope="module")
def computations() -> object:
    from healthfed_common.learning_process import build_federated_computations
    from pipelines.privacy_audit import AuditSetting, audit_plan

    return build_federated_computations(audit_plan(AuditSetting(**SETTING_KWARGS)))  # type: ignore[arg-type]


def test_repeated_work_equals_the_silos_single_call(computations: object) -> None:
    """The audit's repeated runs are the graph a silo runs: noise-free, the same outputs as
    GraphComputation's one call on `poisson_dataset_factory`'s dataset."""
    from healthfed_common.dp.accounting import SamplingSchedule
    from healthfed_common.dp.audit import RepeatedWork
    from healthfed_common.dp.sampling import poisson_dataset_factory
    from pipelines.privacy_audit import CANARY, AuditSetting, audit_plan, training_arrays

    setting = AuditSetting(**SETTING_KWARGS)  # type: ignore[arg-type]
    plan = audit_plan(setting)
    x, y = training_arrays(CANARY, setting, "public_bounds", plan)
    schedule = SamplingSchedule(len(x), len(x), 1)
    client_input = computations.prepare(computations.initialize())  # type: ignore[attr-defined]
    single = computations.work(client_input, [poisson_dataset_factory(x, y, schedule=schedule, noise_multiplier=0.0)])  # type: ignore[attr-defined]
    repeated = RepeatedWork(computations.work, client_input, x, y, schedule, 0.0)  # type: ignore[attr-defined]
    for _ in range(2):
        for a, b in zip(repeated.run(), single):
            np.testing.assert_array_equal(a, b)
    noisy = RepeatedWork(computations.work, client_input, x, y, schedule, 4.0)  # type: ignore[attr-defined]
    assert not all(np.array_equal(a, b) for a, b in zip(noisy.run(), noisy.run()))  # fresh noise per run


def test_dp_round_with_public_bounds_passes_the_canary_audit(computations: object) -> None:
    from pipelines.privacy_audit import AuditSetting, run_audit

    result = run_audit(AuditSetting(**SETTING_KWARGS), "public_bounds", computations)  # type: ignore[arg-type]
    assert result["claimed_epsilon_replace_one_as_calibrated"] <= 2.0
    assert result["epsilon_lower_bound"] <= result["claimed_epsilon"], result
    assert not result["violation"]


def test_audit_flags_train_set_standardisation(computations: object) -> None:
    """Negative control: the same DP-SGD, the same sigma, but the old view (train mean/std):
    the outlier canary moves every record's features and the audit proves epsilon > 2."""
    from pipelines.privacy_audit import AuditSetting, run_audit

    result = run_audit(AuditSetting(**SETTING_KWARGS), "train_standardisation", computations)  # type: ignore[arg-type]
    assert result["epsilon_lower_bound"] > result["claimed_epsilon"], result
    assert result["violation"]
