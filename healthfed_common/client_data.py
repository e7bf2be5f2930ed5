"""The tf.data pipeline a silo feeds to `work`: the same function is used by the silo and by
the fidelity tests, so a federated run and TFF's own `process.next` see identical batches."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from healthfed_common.plan import Plan
from typing import Any


def training_dataset_factory(
    features: NDArray[Any], labels: NDArray[Any], plan: Plan, round_number: int
) -> Callable[[], object]:
    """Shuffled per round with a seed from the plan (reproducible runs), repeated for the
    plan's local epochs, batched. Returned as a factory because the dataset must be created
    inside the graph that runs `work`."""
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.float32).reshape(-1, 1)
    seed = (plan.seeds.data_order * 1_000_003 + round_number) % (2**31 - 1)

    def make() -> object:
        import tensorflow as tf

        dataset = tf.data.Dataset.from_tensor_slices((features, labels))
        dataset = dataset.shuffle(len(features), seed=seed, reshuffle_each_iteration=True)
        return dataset.repeat(plan.local_epochs).batch(plan.batch_size)

    return make
