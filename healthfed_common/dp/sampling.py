"""Poisson-sampled per-step batches: the sampling the accountant assumes, done for real.

For each of the round's `steps_per_round` steps, every record is included independently
with probability q (so batch sizes vary, and may be 0). The randomness is the silo's own,
from the operating system (`secrets`), never the plan's seed: a plan seed is known to the
aggregator and every other silo, and sampling an adversary can predict is not sampling.

Each element also carries the per-step scalars the DP-SGD graph needs
(`noise_multiplier`, `expected_batch_size`), because they depend on the silo's dataset size
and must not be baked into a computation that every silo has to build identically, and the
step's `noise_seed`: two int64 words (128 bits) from `secrets`, which key the stateless
Gaussian noise in the graph (`healthfed_common.dp.client_work`). The noise seeds, like the
sample, are drawn once per round when the factory is built: a retried `work` call on the same
factory reproduces the same noisy update (a second, independently noised release of the
same sample would cost privacy the ledger did not charge).
"""

from __future__ import annotations

import collections
import secrets
from collections.abc import Callable
from typing import Any, TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray

from healthfed_common.dp.accounting import SamplingSchedule

if TYPE_CHECKING:  # imported lazily at run time: the ledger uses this package without TensorFlow
    import tensorflow as tf


def secure_generator() -> np.random.Generator:
    """A numpy Generator seeded with 256 bits from the OS CSPRNG (per call, never reused)."""
    return np.random.Generator(np.random.PCG64DXSM(secrets.randbits(256)))


NOISE_SEED_WORDS = 2  # int64 words per step; must match client_work.NOISE_SEED_WORDS


def noise_seeds(steps: int) -> NDArray[Any]:
    """[steps, 2] int64: 128 bits of OS CSPRNG entropy per DP-SGD step (never a plan seed,
    never TF's process RNG)."""
    if steps < 0:
        raise ValueError("steps must be >= 0")
    raw = secrets.token_bytes(8 * NOISE_SEED_WORDS * steps)
    return np.frombuffer(raw, dtype="<i8").reshape(steps, NOISE_SEED_WORDS).astype(np.int64)


def poisson_step_indices(
    schedule: SamplingSchedule, rng: np.random.Generator | None = None
) -> list[NDArray[Any]]:
    """For each step of one round, the indices of the records included in that step."""
    generator = rng if rng is not None else secure_generator()
    q = schedule.sampling_probability
    n = schedule.dataset_size
    return [
        np.flatnonzero(generator.random(n) < q).astype(np.int64)
        for _ in range(schedule.steps_per_round)
    ]


def poisson_dataset_factory(
    x: NDArray[Any],
    y: NDArray[Any],
    *,
    schedule: SamplingSchedule,
    noise_multiplier: float,
    rng: np.random.Generator | None = None,
) -> Callable[[], tf.data.Dataset]:
    """A no-argument factory of the round's client dataset (what `GraphComputation` takes:
    it calls the factory inside its private graph).

    The sample and the per-step noise seeds are drawn once, now, so calling the factory
    twice gives the same round (a retried `work` call re-runs the same sampled batches with
    the same noise, whose privacy cost was charged once). Elements: OrderedDict(x=[b, ...],
    y=[b, ...], noise_multiplier=[], expected_batch_size=[] (float32), noise_seed=[2]
    (int64)), b ~ Binomial(n, q)."""
    if len(x) != schedule.dataset_size or len(y) != schedule.dataset_size:
        raise ValueError("x and y must have exactly schedule.dataset_size rows")
    if noise_multiplier < 0:
        raise ValueError("noise_multiplier must be >= 0")
    steps = poisson_step_indices(schedule, rng)
    seeds = noise_seeds(len(steps))  # from `secrets` even when a test fixes the sampling rng
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

        def to_batch(indices: tf.Tensor, seed: tf.Tensor) -> collections.OrderedDict[str, tf.Tensor]:
            return collections.OrderedDict(
                x=tf.gather(features, indices),
                y=tf.gather(labels, indices),
                noise_multiplier=tf.constant(sigma),
                expected_batch_size=tf.constant(expected),
                noise_seed=seed,
            )

        return tf.data.Dataset.from_tensor_slices((ragged, tf.constant(seeds, tf.int64))).map(to_batch)

    return factory
