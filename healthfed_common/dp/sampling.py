"""Poisson-sampled per-step batches: the sampling the accountant assumes, done for real.

For each of the round's `steps_per_round` steps, every record is included independently
with probability q (so batch sizes vary, and may be 0). The randomness is the silo's own,
from the operating system (`secrets`), never the plan's seed: a plan seed is known to the
aggregator and every other silo, and sampling an adversary can predict is not sampling.

Each element also carries the per-step scalars the DP-SGD graph needs
(`noise_multiplier`, `expected_batch_size`), because they depend on the silo's dataset size
and must not be baked into a computation that every silo has to build identically.
"""

from __future__ import annotations

import collections
import secrets
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from healthfed_common.dp.accounting import SamplingSchedule

if TYPE_CHECKING:  # imported lazily at run time: the ledger uses this package without TensorFlow
    import tensorflow as tf


def secure_generator() -> np.random.Generator:
    """A numpy Generator seeded with 256 bits from the OS CSPRNG (per call, never reused)."""
    return np.random.Generator(np.random.PCG64DXSM(secrets.randbits(256)))


def poisson_step_indices(
    schedule: SamplingSchedule, rng: np.random.Generator | None = None
) -> list[np.ndarray]:
    """For each step of one round, the indices of the records included in that step."""
    generator = rng if rng is not None else secure_generator()
    q = schedule.sampling_probability
    n = schedule.dataset_size
    return [
        np.flatnonzero(generator.random(n) < q).astype(np.int64)
        for _ in range(schedule.steps_per_round)
    ]


def poisson_dataset_factory(
    x: np.ndarray,
    y: np.ndarray,
    *,
    schedule: SamplingSchedule,
    noise_multiplier: float,
    rng: np.random.Generator | None = None,
) -> Callable[[], tf.data.Dataset]:
    """A no-argument factory of the round's client dataset (what `GraphComputation` takes:
    it calls the factory inside its private graph).

    The sample is drawn once, now, so calling the factory twice gives the same round (a
    retried `work` call re-runs the same sampled batches, whose privacy cost was charged
    once). Elements: OrderedDict(x=[b, ...], y=[b, ...], noise_multiplier=[],
    expected_batch_size=[]), float32, b ~ Binomial(n, q)."""
    if len(x) != schedule.dataset_size or len(y) != schedule.dataset_size:
        raise ValueError("x and y must have exactly schedule.dataset_size rows")
    if noise_multiplier < 0:
        raise ValueError("noise_multiplier must be >= 0")
    steps = poisson_step_indices(schedule, rng)
    lengths = np.array([len(s) for s in steps], dtype=np.int64)
    flat = np.concatenate(steps) if steps else np.zeros([0], np.int64)
    x32 = np.asarray(x, dtype=np.float32)
    y32 = np.asarray(y, dtype=np.float32)
    sigma = np.float32(noise_multiplier)
    expected = np.float32(schedule.expected_batch_size)

    def factory() -> tf.data.Dataset:
        import tensorflow as tf

        ragged = tf.RaggedTensor.from_row_lengths(tf.constant(flat), tf.constant(lengths))
        features = tf.constant(x32)
        labels = tf.constant(y32)

        def to_batch(indices: tf.Tensor) -> collections.OrderedDict[str, tf.Tensor]:
            return collections.OrderedDict(
                x=tf.gather(features, indices),
                y=tf.gather(labels, indices),
                noise_multiplier=tf.constant(sigma),
                expected_batch_size=tf.constant(expected),
            )

        return tf.data.Dataset.from_tensor_slices(ragged).map(to_batch)

    return factory
