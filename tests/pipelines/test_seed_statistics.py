"""The interval reported beside a benchmark bar (pipelines.seed_statistics): it must say "no
difference shown" for a gap inside the seed-to-seed spread and name the direction of a real
one, and agree with scipy's own t-tests (an independent route to the same decision)."""

from __future__ import annotations

import math
import numpy as np
import pytest
from scipy import stats

from pipelines.seed_statistics import difference_interval


def test_a_gap_inside_the_spread_holds_zero_and_a_clear_shift_does_not() -> None:
    tie = difference_interval([0.80, 0.78, 0.82, 0.79, 0.81], [0.81, 0.79, 0.80, 0.80, 0.80], paired=True)
    assert tie["interval"][0] < 0 < tie["interval"][1] and tie["reads"].startswith("no difference shown")
    below = difference_interval([0.70, 0.71, 0.69, 0.70, 0.72], [0.80, 0.81, 0.79, 0.80, 0.81], paired=True)
    assert below["interval"][1] < 0 and below["reads"] == "left below right at this confidence"
    assert below["seeds_left_ge_right"] == 0 and below["per_seed_differences"][0] == pytest.approx(-0.10)


def test_the_paired_interval_is_students_t_over_the_differences() -> None:
    # differences 0.01, 0.02, 0.03: mean 0.02, sd 0.01, 2 degrees of freedom, t = 4.3027
    out = difference_interval([0.51, 0.52, 0.53], [0.5, 0.5, 0.5], paired=True)
    half = 4.302653 * 0.01 / np.sqrt(3)
    assert out["difference"] == pytest.approx(0.02)
    assert out["interval"] == pytest.approx([0.02 - half, 0.02 + half], abs=1e-4)


def test_pairing_removes_what_both_sides_share_by_seed() -> None:
    """Where a seed that is good on one side is good on the other, pairing sees a steady lead
    the unpaired interval cannot (on the benchmark's figures the two sides are not strongly
    correlated, and paired and Welch intervals agree; this is the case pairing is for)."""
    shared = np.array([0.70, 0.80, 0.75, 0.85, 0.72])
    paired = difference_interval(shared + 0.01, shared, paired=True)
    unpaired = difference_interval(shared + 0.01, shared, paired=False)
    assert paired["interval"][0] > 0
    assert unpaired["interval"][0] < 0 < unpaired["interval"][1]


@pytest.mark.parametrize("paired", [True, False])
def test_the_interval_excludes_zero_exactly_when_scipys_test_rejects(paired: bool) -> None:
    rng = np.random.default_rng(7)
    decisions = []
    for _ in range(200):
        left = rng.normal(0.8, 0.02, 5)
        right = rng.normal(0.8 + rng.uniform(-0.05, 0.05), 0.02, 5)
        out = difference_interval(left, right, paired=paired)
        p_value = (stats.ttest_rel(left, right) if paired else stats.ttest_ind(left, right, equal_var=False)).pvalue
        excludes = not out["interval"][0] <= 0 <= out["interval"][1]
        if abs(p_value - 0.05) > 1e-3:  # the 4-decimal rounding of the interval decides the borderline
            assert excludes == (p_value < 0.05)
        decisions.append(excludes)
    assert 20 < sum(decisions) < 180  # both answers were exercised


def test_no_spread_draws_no_interval_and_float_noise_is_not_a_finding() -> None:
    for left, right in (([0.8] * 5, [0.8005] * 5), ([0.1 + 0.2] * 3, [0.3] * 3), ([0.8] * 3, [0.8] * 3)):
        for paired in (True, False):
            out = difference_interval(left, right, paired=paired)
            assert out["reads"].startswith("no spread over the seeds"), (left, right, paired)
            assert not any(bound == 0 and math.copysign(1.0, bound) < 0 for bound in out["interval"])  # no -0.0


def test_a_missing_figure_is_refused_not_read() -> None:
    with pytest.raises(ValueError, match="finite"):
        difference_interval([0.8, float("nan"), 0.7], [0.7, 0.7, 0.7], paired=True)


def test_too_few_or_unmatched_seeds_are_refused() -> None:
    with pytest.raises(ValueError, match="at least two seeds"):
        difference_interval([0.8], [0.7, 0.7], paired=False)
    with pytest.raises(ValueError, match="same seeds"):
        difference_interval([0.8, 0.7, 0.9], [0.7, 0.7], paired=True)
