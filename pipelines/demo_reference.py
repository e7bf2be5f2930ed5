"""What the demo measures OUTSIDE the federation, from the synthetic exports it generated itself.

A real coordinator never sees a hospital's records, so none of this is part of the federation:
the demo can do it only because it made the data. It answers two questions the federation's
own evaluation (each silo's released accuracy and AUC on its held-out records) cannot:

- Is the federated model better than what each hospital could train alone? Each hospital's
  local-only model uses the same model family and initialisation (the plan's registry model
  and `seeds.model_init`), the same preprocessing (the silo's own minimisation and training
  view code under the demo's dataset policy, hence the same per-record held-out split), the
  same client optimizer and batch size and the same number of passes over its records as the
  federation ran on it (rounds x local_epochs) -- without DP noise, since a model a hospital
  keeps to itself releases nothing. All models are scored on the union of the three
  hospitals' held-out records.
- Does the model beat the trivial answer? Accuracy, AUC, balanced accuracy and the accuracy of
  always answering "no event" side by side, on the same records.

The federated model is the SavedModel the aggregator exported; scoring it here on each
hospital's held-out records must reproduce the accuracy that hospital's silo released through
the federation (`consistency`), which checks that this module sees exactly the silos' records.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from numpy.typing import NDArray

REFERENCE_NOTE = (
    "computed by the demo pipeline OUTSIDE the federation, from the synthetic exports it generated "
    "(a real coordinator never sees these records); every model is scored on the union of the "
    "hospitals' held-out records")
LOCAL_ONLY_NOTE = (
    "each hospital alone: same model, initialisation, preprocessing, optimizer, batch size and number "
    "of passes over its own training records as the federation ran (rounds x local_epochs), no DP noise")


@dataclass(frozen=True)
class SiloArrays:
    """One hospital's training view (silo_node.datasets.view) of its train and test records."""

    train_x: NDArray[Any]
    train_y: NDArray[Any]
    test_x: NDArray[Any]
    test_y: NDArray[Any]


def silo_arrays(export: Path, plan_document: Mapping[str, Any], policy_document: Mapping[str, Any],
                dataset: str) -> SiloArrays:
    """What the silo trains and evaluates on for this export: the same reader, minimisation
    (identifier handling, per-record holdout) and plan view code, run in this process."""
    from healthfed_common.plan import parse_plan
    from silo_node.datasets.minimisation import minimise_table
    from silo_node.datasets.policy import DatasetPolicy
    from silo_node.datasets.tabular_reader import read_table
    from silo_node.datasets.view import tabular_view

    plan = parse_plan(dict(plan_document))
    policy = DatasetPolicy.from_document(dict(policy_document))
    data = export.read_bytes()
    raw = read_table(export, data, encoding=policy.encoding, missing_values=policy.missing_values)
    # The secret only keys pseudonyms and date shifts, which the demo policy does not store.
    table, _, _ = minimise_table(raw, policy, file=export, secret=b"\0" * 32,
                                 content_sha256=hashlib.sha256(data).hexdigest())
    train = tabular_view(dataset, table, plan, "train", policy)
    test = tabular_view(dataset, table, plan, "test", policy)
    return SiloArrays(train.features, train.labels.ravel(), test.features, test.labels.ravel())


def roc_auc(labels: NDArray[Any], scores: NDArray[Any]) -> float:
    """Area under the ROC curve: the probability that a random positive scores above a random
    negative (ties count one half), by the rank-sum (Mann-Whitney U) formula."""
    labels = np.asarray(labels).ravel() > 0.5
    scores = np.asarray(scores, dtype=np.float64).ravel()
    positives, negatives = int(labels.sum()), int((~labels).sum())
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    start = 0
    while start < len(scores):  # average ranks over ties
        stop = start
        while stop + 1 < len(scores) and sorted_scores[stop + 1] == sorted_scores[start]:
            stop += 1
        ranks[order[start:stop + 1]] = 0.5 * (start + stop) + 1.0
        start = stop + 1
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def binary_metrics(labels: NDArray[Any], scores: NDArray[Any], threshold: float = 0.5) -> dict[str, float]:
    """Accuracy beside what makes it mean something: AUC, balanced accuracy (mean of
    sensitivity and specificity) and the accuracy of always answering "no event"."""
    truth = np.asarray(labels).ravel() > 0.5
    predicted = np.asarray(scores, dtype=np.float64).ravel() >= threshold
    positives, negatives = int(truth.sum()), int((~truth).sum())
    sensitivity = float((predicted & truth).sum() / positives) if positives else float("nan")
    specificity = float((~predicted & ~truth).sum() / negatives) if negatives else float("nan")
    return {
        "accuracy": round(float((predicted == truth).mean()), 4),
        "auc": round(roc_auc(truth, scores), 4),
        "balanced_accuracy": round(0.5 * (sensitivity + specificity), 4),
        "sensitivity": round(sensitivity, 4),
        "specificity": round(specificity, 4),
        "all_negative_baseline_accuracy": round(negatives / len(truth), 4),
        "num_examples": len(truth),
    }


def train_local_only(plan_document: Mapping[str, Any], x: NDArray[Any], y: NDArray[Any]) -> Any:
    """The model a hospital could train alone (see the module docstring for what is the same
    as in the federation). Returns the trained Keras model."""
    import tensorflow as tf

    from healthfed_common.learning_process import build_keras_model
    from healthfed_common.plan import parse_plan

    plan = parse_plan(dict(plan_document))
    if plan.client_optimizer.name != "sgd":
        raise ValueError("the local-only reference mirrors the demo's plain-SGD client optimizer only")
    tf.keras.utils.set_random_seed(plan.seeds.data_order)
    model = build_keras_model(plan)
    model.compile(optimizer=tf.keras.optimizers.SGD(learning_rate=plan.client_optimizer.learning_rate),
                  loss=tf.keras.losses.BinaryCrossentropy())
    model.fit(x, y.reshape(-1, 1), batch_size=plan.batch_size, epochs=plan.rounds * plan.local_epochs,
              shuffle=True, verbose=0)
    return model


def predict(model: Any, x: NDArray[Any]) -> NDArray[Any]:
    return np.asarray(model.predict(x, batch_size=1024, verbose=0), dtype=np.float64).ravel()


def load_federated_model(model_path: Path) -> Any:
    """The SavedModel the aggregator exported (a Keras model)."""
    import tensorflow as tf

    return tf.keras.models.load_model(model_path, compile=False)


def local_only_figures(silos: Mapping[str, SiloArrays], plan_document: Mapping[str, Any]) -> dict[str, Any]:
    """Each hospital's local-only model scored on the union of the held-out records. Needs no
    federated model, so the demo computes it while the federation runs."""
    union_x, union_y = held_out_union(silos)
    return {silo: {**binary_metrics(union_y, predict(train_local_only(plan_document, silos[silo].train_x,
                                                                       silos[silo].train_y), union_x)),
                   "trained_on": int(len(silos[silo].train_y))}
            for silo in sorted(silos)}


def held_out_union(silos: Mapping[str, SiloArrays]) -> tuple[NDArray[Any], NDArray[Any]]:
    names = sorted(silos)
    return (np.concatenate([silos[s].test_x for s in names]), np.concatenate([silos[s].test_y for s in names]))


def compare(silos: Mapping[str, SiloArrays], federated: Any, local_only: Mapping[str, Any],
            released_per_silo: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The federated model beside the all-negative baseline and each hospital's local-only
    model on the union of held-out records, plus the consistency check against what each silo
    released through the federation."""
    union_x, union_y = held_out_union(silos)
    consistency: dict[str, Any] = {}
    for silo in sorted(silos):
        here = binary_metrics(silos[silo].test_y, predict(federated, silos[silo].test_x))
        released = released_per_silo.get(silo, {})
        consistency[silo] = {
            "num_examples_here": here["num_examples"], "num_examples_released": released.get("num_examples"),
            "accuracy_here": here["accuracy"], "accuracy_released": released.get("accuracy"),
            "matches": released.get("num_examples") == here["num_examples"]
            and abs(float(released.get("accuracy", -1.0)) - here["accuracy"]) < 1e-3,
        }
    return {
        "note": REFERENCE_NOTE,
        "held_out_union": {"num_examples": int(len(union_y)), "positive_rate": round(float(union_y.mean()), 4),
                           "per_silo": {s: int(len(silos[s].test_y)) for s in sorted(silos)}},
        "federated_model": binary_metrics(union_y, predict(federated, union_x)),
        "local_only_models": dict(local_only),
        "local_only_note": LOCAL_ONLY_NOTE,
        "consistency_with_released_metrics": consistency,
    }


def format_table(reference: Mapping[str, Any]) -> str:
    """The comparison as the demo prints it."""
    union = reference["held_out_union"]
    fed = reference["federated_model"]
    rows = [("always 'no event' (baseline)", fed["all_negative_baseline_accuracy"], 0.5, 0.5),
            ("federated model (DP, secure aggregation)", fed["accuracy"], fed["auc"], fed["balanced_accuracy"])]
    rows += [(f"{silo} alone (local-only, no DP)", m["accuracy"], m["auc"], m["balanced_accuracy"])
             for silo, m in reference["local_only_models"].items()]
    lines = [f"held-out records of all hospitals: {union['num_examples']} ({100 * union['positive_rate']:.1f} % events); "
             "reference computed by the demo OUTSIDE the federation from the data it generated",
             f"  {'model':<44}{'accuracy':>9}{'AUC':>7}{'balanced acc.':>15}"]
    lines += [f"  {name:<44}{acc:>9.3f}{auc:>7.3f}{bal:>15.3f}" for name, acc, auc, bal in rows]
    return "\n".join(lines)
