"""Poisson sampling: the inclusion law the accountant assumes, from OS entropy."""

from __future__ import annotations

import numpy as np
from scipy import stats

from healthfed_common.dp.accounting import SamplingSchedule
from healthfed_common.dp.sampling import poisson_dataset_factory, poisson_step_indices

ALPHA = 1e-4


def test_each_record_is_included_independently_with_probability_q() -> None:
    schedule = SamplingSchedule(dataset_size=200, batch_size=20, local_epochs=50)  # q = 0.1, 500 steps
    steps = poisson_step_indices(schedule)
    assert len(steps) == schedule.steps_per_round
    counts = np.zeros(200)
    for s in steps:
        assert len(set(s.tolist())) == len(s)
        counts[s] += 1
    trials = len(steps)
    # Each record's inclusion count ~ Binomial(500, 0.1): chi-square over all records.
    expected = trials * 0.1
    chi2 = (((counts - expected) ** 2) / (expected * 0.9)).sum()
    p = 2 * min(stats.chi2.cdf(chi2, 200), stats.chi2.sf(chi2, 200))
    assert p > ALPHA
    # Batch sizes ~ Binomial(200, 0.1): variable, not fixed.
    sizes = np.array([len(s) for s in steps])
    assert sizes.std() > 1.0
    assert stats.ttest_1samp(sizes, 20.0).pvalue > ALPHA


def test_sampling_is_not_reproducible_from_anything_public() -> None:
    schedule = SamplingSchedule(100, 10, 1)
    a = np.concatenate(poisson_step_indices(schedule))
    b = np.concatenate(poisson_step_indices(schedule))
    assert a.shape != b.shape or not np.array_equal(a, b)


def test_dataset_elements_carry_the_per_step_scalars() -> None:
    import tensorflow as tf

    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    y = (np.arange(10) % 2).astype(np.float32).reshape(10, 1)
    schedule = SamplingSchedule(10, 4, 2)
    factory = poisson_dataset_factory(x, y, schedule=schedule, noise_multiplier=1.25)
    dataset = factory()
    assert list(dataset.element_spec) == ["x", "y", "noise_multiplier", "expected_batch_size", "noise_seed"]
    assert dataset.element_spec["noise_seed"].shape.as_list() == [2]
    assert dataset.element_spec["x"].shape.as_list() == [None, 3]
    batches = list(dataset.as_numpy_iterator())
    assert len(batches) == schedule.steps_per_round == 6
    for batch in batches:
        assert batch["noise_multiplier"] == np.float32(1.25)
        assert batch["expected_batch_size"] == np.float32(4.0)
        rows = (batch["x"][:, 0] / 3).astype(int)
        np.testing.assert_array_equal(batch["y"][:, 0], rows % 2)
    # Every step has its own 128-bit noise seed.
    assert len({tuple(b["noise_seed"]) for b in batches}) == len(batches)
    # The sample and the seeds are drawn once: the factory replays the same round.
    again = list(factory().as_numpy_iterator())
    assert all(np.array_equal(a["x"], b["x"]) for a, b in zip(batches, again))
    assert all(np.array_equal(a["noise_seed"], b["noise_seed"]) for a, b in zip(batches, again))
    # Another round (another factory over the same data) has fresh seeds.
    other = poisson_dataset_factory(x, y, schedule=schedule, noise_multiplier=1.25)()
    assert not any(np.array_equal(a["noise_seed"], b["noise_seed"])
                   for a, b in zip(batches, other.as_numpy_iterator()))
    assert isinstance(dataset, tf.data.Dataset)
