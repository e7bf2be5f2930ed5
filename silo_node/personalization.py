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


def cross_validation_folds(labels: NDArray[Any], folds: int, seed: int) -> list[tuple[NDArray[Any], NDArray[Any]]]:
    """(fit, holdout) indices of each of `folds` stratified folds of this silo's training
    records (scikit-learn's StratifiedKFold, shuffled with the plan's data-order seed, so a
    retried evaluation makes the same choice): every record is held out exactly once. A class
    with fewer records than folds (Switzerland's one negative) lands in as many folds as it has
    records; scikit-learn's warning about it is expected here and silenced. Empty when no
    class has as many records as folds (scikit-learn cannot stratify then; this covers a silo
    with fewer records than folds), so the caller keeps the fewest listed epochs."""
    import warnings

    from sklearn.model_selection import StratifiedKFold

    counts = np.unique(np.asarray(labels), return_counts=True)[1]
    if len(counts) == 0 or counts.max() < folds:
        return []
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        return [(np.sort(fit), np.sort(holdout))
                for fit, holdout in splitter.split(np.zeros((len(labels), 1)), np.asarray(labels).astype(int))]


def choose_epochs(plan: Plan, weights: list[NDArray[Any]], features: NDArray[Any], labels: NDArray[Any],
                  evaluate: Any) -> tuple[int, dict[int, dict[str, float]]]:
    """This silo's own choice among the plan's `local_epochs_choices`, on its training records.

    With `choice_folds` 1, each count fine-tunes the global model on the fit part of the
    training records and is scored on the held-out part (`holdout_split`); the best held-out
    accuracy wins, ties go to the lower held-out loss and then to fewer epochs (0, the global
    model itself, wins a full tie). A holdout of one class (Switzerland's: one negative record
    in all, which stays in the fit part) scores every count alike on accuracy, so the loss
    decides, which favours longer fine-tuning towards that class.

    With `choice_folds` k >= 2, each count is scored on every fold of `cross_validation_folds`
    and the fewest epochs within one standard error of the best mean accuracy win
    (`fewest_within_one_standard_error`).

    Returns the count and every candidate's held-out metrics (which stay in the silo)."""
    spec = plan.personalization
    if spec is None or spec.local_epochs_choices is None:
        raise ValueError("the plan fixes the fine-tuning epochs; there is nothing to choose")
    if spec.choice_folds > 1:
        splits = cross_validation_folds(labels, spec.choice_folds, plan.seeds.data_order)
    else:
        fit, holdout = holdout_split(labels, spec.holdout_fraction, plan.seeds.data_order)
        splits = [(fit, holdout)] if len(fit) and len(holdout) else []
    if not splits:
        # too few records to hold any out: the fewest listed epochs (the global model when 0 is listed)
        return min(spec.local_epochs_choices), {}
    per_split = _held_out_scores(plan, weights, features, labels, splits, evaluate)
    if spec.choice_folds > 1:
        return fewest_within_one_standard_error(per_split)
    scores = {epochs: found[0] for epochs, found in per_split.items()}
    return best_epochs(scores), scores


def _held_out_scores(plan: Plan, weights: list[NDArray[Any]], features: NDArray[Any], labels: NDArray[Any],
                     splits: list[tuple[NDArray[Any], NDArray[Any]]], evaluate: Any) -> dict[int, list[dict[str, float]]]:
    """Each listed count's held-out metrics on each (fit, holdout) split: the global model
    fine-tuned on the fit part for that many epochs, scored on the holdout."""
    spec = plan.personalization
    assert spec is not None and spec.local_epochs_choices is not None  # checked by choose_epochs
    per_split: dict[int, list[dict[str, float]]] = {e: [] for e in spec.local_epochs_choices}
    for fit, holdout in splits:
        for epochs in spec.local_epochs_choices:  # increasing (the plan refuses any other order)
            model = fine_tune(plan, weights, features[fit], labels[fit], epochs)
            per_split[epochs].append(
                evaluate(plan, [np.asarray(w) for w in model.get_weights()], features[holdout], labels[holdout]))
    return per_split


def fewest_within_one_standard_error(per_fold: dict[int, list[dict[str, float]]]) -> tuple[int, dict[int, dict[str, float]]]:
    """The one-standard-error rule over cross-validation folds: the best count is the one with
    the best mean held-out accuracy (`best_epochs` on the means: ties to the lower mean loss,
    then fewer epochs, so among counts tied on accuracy the lower-loss one's folds set the
    bar); the choice is the fewest epochs whose mean accuracy is at least the best's minus the
    standard error of the best's fold accuracies (sample std / sqrt(folds)). So, with 0 listed,
    fine-tuning is kept only where its mean leads the shared model's by more than that standard
    error. The folds share training records, so the standard error understates how much the
    means would move on other records: the rule is a guard against choosing by noise, not a
    test. Returns the count and each count's mean accuracy, mean loss and standard error."""
    scores: dict[int, dict[str, float]] = {}
    for epochs, folds in per_fold.items():
        accuracy = np.asarray([f["accuracy"] for f in folds], dtype=np.float64)
        scores[epochs] = {
            "accuracy": float(accuracy.mean()),
            "loss": float(np.mean([f["loss"] for f in folds])),
            "accuracy_standard_error": float(accuracy.std(ddof=1) / np.sqrt(len(accuracy))) if len(accuracy) > 1 else 0.0,
        }
    best = best_epochs(scores)
    floor = scores[best]["accuracy"] - scores[best]["accuracy_standard_error"]
    # 1e-12: fold means are sums of a few fractions, so "equal" must survive float rounding
    return min(e for e in scores if scores[e]["accuracy"] >= floor - 1e-12), scores


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
    `local_epochs_choices` the silo first picks the epochs on `train` alone (a holdout or
    folds of it, `choose_epochs`), then fine-tunes on all of `train` for that many, and the count joins the
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
