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


def fine_tune(plan: Plan, weights: list[NDArray[Any]], features: NDArray[Any], labels: NDArray[Any],
              epochs: int | None = None) -> Any:
    """The plan's model started from `weights` and trained on (features, labels) for `epochs`
    (default: the plan's fixed `personalization.local_epochs`; 0 returns the model unchanged):
    the plan's client optimizer, batch size, loss and data-order seed (a round number past the
    plan's last, so the order differs from every training round's). Returns the Keras model;
    deterministic for the same inputs."""
    import tensorflow as tf

    spec = plan.personalization
    if spec is None:
        raise ValueError("the plan asks for no personalization")
    epochs = spec.local_epochs if epochs is None else epochs
    if epochs is None:
        raise ValueError("the plan lets each silo choose the epochs; pass the chosen count")
    model = build_keras_model(plan)
    model.set_weights(weights)
    if epochs == 0:
        return model
    trainable = list(model.trainable_variables)
    optimizer = tff_optimizer(plan.client_optimizer)
    state = optimizer.initialize(tuple(tf.TensorSpec(v.shape, v.dtype) for v in trainable))
    loss_fn = tf.keras.losses.BinaryCrossentropy()
    epochs_plan = plan.model_copy(update={"local_epochs": epochs})
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


def holdout_split(labels: NDArray[Any], fraction: float, seed: int) -> tuple[NDArray[Any], NDArray[Any]]:
    """Indices (fit, holdout) of a split of this silo's training records, stratified by label:
    `fraction` of each class (rounded, at least one record of every class with two or more, so
    the holdout sees both classes where the records have them) goes to the holdout. Seeded by
    the plan's data-order seed, so a retried evaluation makes the same choice."""
    rng = np.random.default_rng([seed, 0x5E1EC7])
    fit: list[int] = []
    holdout: list[int] = []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        take = int(round(fraction * len(members)))
        take = min(max(take, 1 if len(members) >= 2 else 0), len(members) - 1)
        holdout += members[:take].tolist()
        fit += members[take:].tolist()
    return np.sort(np.asarray(fit, dtype=np.int64)), np.sort(np.asarray(holdout, dtype=np.int64))


def choose_epochs(plan: Plan, weights: list[NDArray[Any]], features: NDArray[Any], labels: NDArray[Any],
                  evaluate: Any) -> tuple[int, dict[int, dict[str, float]]]:
    """This silo's own choice among the plan's `local_epochs_choices`: each count fine-tunes
    the global model on the fit part of the training records and is scored on the held-out
    part (`holdout_split`); the best held-out accuracy wins, ties go to the lower held-out loss
    and then to fewer epochs (0, the global model itself, wins a full tie). A holdout of one
    class (Switzerland's: one negative record in all, which stays in the fit part) scores every
    count alike on accuracy, so the loss decides, which favours longer fine-tuning towards that
    class. Returns the count and every candidate's held-out metrics (which stay in the silo)."""
    spec = plan.personalization
    if spec is None or spec.local_epochs_choices is None:
        raise ValueError("the plan fixes the fine-tuning epochs; there is nothing to choose")
    fit, holdout = holdout_split(labels, spec.holdout_fraction, plan.seeds.data_order)
    if len(holdout) == 0 or len(fit) == 0:
        # too few records to hold any out: the fewest listed epochs (the global model when 0 is listed)
        return min(spec.local_epochs_choices), {}
    scores: dict[int, dict[str, float]] = {}
    for epochs in spec.local_epochs_choices:  # increasing (the plan refuses any other order)
        model = fine_tune(plan, weights, features[fit], labels[fit], epochs)
        scores[epochs] = evaluate(plan, [np.asarray(w) for w in model.get_weights()], features[holdout], labels[holdout])
    return best_epochs(scores), scores


def best_epochs(scores: dict[int, dict[str, float]]) -> int:
    """The count with the best held-out accuracy; ties to the lower held-out loss, then to
    fewer epochs."""
    return min(scores, key=lambda e: (-scores[e]["accuracy"], _finite_or_inf(scores[e]["loss"]), e))


def _finite_or_inf(value: float) -> float:
    """A diverged candidate's NaN loss ranks last (NaN compares false both ways and would
    otherwise keep whatever came first)."""
    return value if np.isfinite(value) else float("inf")


def personalized_metrics(
    plan: Plan,
    weights: list[NDArray[Any]],
    train: tuple[NDArray[Any], NDArray[Any]],
    test: tuple[NDArray[Any], NDArray[Any]],
    evaluate: Any,
) -> dict[str, float]:
    """`evaluate(plan, weights, features, labels)` (the silo's own evaluation) of the model
    fine-tuned on `train`, scored on `test`, each metric renamed `personalized_<name>`. Under
    `local_epochs_choices` the silo first picks the epochs on a holdout of `train`
    (`choose_epochs`), then fine-tunes on all of `train` for that many, and the count joins the
    release as `personalized_fine_tuning_epochs`. The fine-tuned weights go out of scope here."""
    spec = plan.personalization
    if spec is None:
        raise ValueError("the plan asks for no personalization")
    epochs = spec.local_epochs
    if epochs is None:
        epochs, _ = choose_epochs(plan, weights, *train, evaluate)
    model = fine_tune(plan, weights, *train, epochs)
    tuned = [np.asarray(w) for w in model.get_weights()]
    metrics = evaluate(plan, tuned, *test)
    released = {PREFIX + name: float(value) for name, value in metrics.items()}
    if spec.chosen_locally:
        released[PREFIX + "fine_tuning_epochs"] = float(epochs)
    return released
