"""Per-hospital personalisation at the final evaluation: local fine-tuning of the global model.

Why here, in the silo, and only here: the fine-tuned model is this hospital's own. It is
trained on the silo's training records, scored on its held-out records, and then dropped; the
weights are never stored, never put in a message, never in the egress record. What leaves is
what the evaluation already releases -- aggregate metrics -- with a `personalized_` prefix
beside the global model's, recorded in the privacy ledger as part of the same evaluation
disclosure.

Why non-DP plans only (`Plan` refuses personalization with dp): the fine-tuning reads the
training records once more after the plan's last round, and its metrics depend on them; under
a DP plan that would be a release the approved epsilon does not cover.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from healthfed_common.client_data import training_dataset_factory
from healthfed_common.learning_process import build_keras_model, tff_optimizer
from healthfed_common.plan import Plan

PREFIX = "personalized_"


def fine_tune(plan: Plan, weights: list[NDArray[Any]], features: NDArray[Any], labels: NDArray[Any]) -> Any:
    """The plan's model started from `weights` and trained on (features, labels) for the
    plan's `personalization.local_epochs`: the plan's client optimizer, batch size, loss and
    data-order seed (a round number past the plan's last, so the order differs from every
    training round's). Returns the Keras model; deterministic for the same inputs."""
    import tensorflow as tf

    spec = plan.personalization
    if spec is None:
        raise ValueError("the plan asks for no personalization")
    model = build_keras_model(plan)
    model.set_weights(weights)
    trainable = list(model.trainable_variables)
    optimizer = tff_optimizer(plan.client_optimizer)
    state = optimizer.initialize(tuple(tf.TensorSpec(v.shape, v.dtype) for v in trainable))
    loss_fn = tf.keras.losses.BinaryCrossentropy()
    epochs_plan = plan.model_copy(update={"local_epochs": spec.local_epochs})
    dataset = training_dataset_factory(features, labels, epochs_plan, plan.rounds + 1)()

    def one_step(state: Any, x: Any, y: Any) -> Any:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        gradients = tape.gradient(loss, trainable, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        state, updated = optimizer.next(state, tuple(trainable), tuple(gradients))
        for variable, value in zip(trainable, updated):
            variable.assign(value)
        return state

    step = tf.function(one_step, reduce_retracing=True)  # one trace, reused for every batch
    for x, y in dataset:  # type: ignore[attr-defined]
        state = step(state, x, y)
    return model


def personalized_metrics(
    plan: Plan,
    weights: list[NDArray[Any]],
    train: tuple[NDArray[Any], NDArray[Any]],
    test: tuple[NDArray[Any], NDArray[Any]],
    evaluate: Any,
) -> dict[str, float]:
    """`evaluate(plan, weights, features, labels)` (the silo's own evaluation) of the model
    fine-tuned on `train`, scored on `test`, each metric renamed `personalized_<name>`. The
    fine-tuned weights go out of scope here."""
    model = fine_tune(plan, weights, *train)
    tuned = [np.asarray(w) for w in model.get_weights()]
    metrics = evaluate(plan, tuned, *test)
    return {PREFIX + name: float(value) for name, value in metrics.items()}
