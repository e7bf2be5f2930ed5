"""What the Fed-Heart-Disease benchmark measures OUTSIDE the federation: the pooled reference
and each hospital's local-only model (issue 16).

Why: the split alone moves what is reachable (Switzerland has 16 test records), so a federated
figure means something only beside what a central model on the same split reaches, and the
point of federating is to beat what each hospital could train alone. Neither is part of the
federation -- a real coordinator never pools hospitals' records -- the benchmark can compute
them only because it reads the published files itself.

- Pooled reference: ONE logistic regression trained centrally on the union of the four
  hospitals' training views (each hospital's records preprocessed exactly as its silo does
  for the federated setting compared with: per-hospital train-set standardisation for the
  non-private plan, the public clinical ranges for the DP plans), scored like the federation:
  the plain mean of the four hospitals' test accuracies. Trained with the same model,
  initialisation, client optimizer, batch size and number of passes (rounds x local_epochs) as
  the non-private plan (`demo_reference.train_local_only`, the demo's own local-only trainer),
  one run per plan seed; a converged L2 logistic regression (scikit-learn, C = 1) on the same
  arrays is reported beside it, so the reference does not hinge on the SGD schedule.
- Local-only: each hospital's model trained the same way on its own training view only and
  scored on its own test view (no DP noise: a model a hospital keeps to itself releases
  nothing).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from pipelines.demo_reference import SiloArrays, predict, train_local_only

POOLED_NOTE = (
    "computed by the benchmark OUTSIDE the federation (a real coordinator never pools records): one logistic "
    "regression trained centrally on the union of the four hospitals' training views, each hospital's records "
    "preprocessed as its silo does for the setting compared with; same model, initialisation, client optimizer, "
    "batch size and passes (rounds x local_epochs) as the non-private plan, one run per plan seed; scored as the "
    "federation is: plain mean of the four hospitals' test accuracies")
SKLEARN_NOTE = ("converged L2 logistic regression (scikit-learn LogisticRegression, C=1, lbfgs) on the same pooled "
                "arrays: a check that the reference does not hinge on the SGD schedule")
LOCAL_ONLY_NOTE = (
    "computed OUTSIDE the federation: each hospital alone, same model, initialisation, preprocessing, optimizer, "
    "batch size and passes as the non-private plan, trained on its own training view only and scored on its own "
    "test view, one run per plan seed, no DP noise")


def accuracy(labels: NDArray[Any], scores: NDArray[Any]) -> float:
    """Share of records whose score is on the right side of 0.5 (the silos' BinaryAccuracy)."""
    return float(np.mean((np.asarray(scores).ravel() >= 0.5) == (np.asarray(labels).ravel() > 0.5)))


def _with_seed(plan_document: Mapping[str, Any], seed: int) -> dict[str, Any]:
    return {**plan_document, "seeds": {"model_init": seed, "data_order": seed}}


def _summary(per_seed: list[dict[str, float]]) -> dict[str, Any]:
    means = [float(np.mean(list(run.values()))) for run in per_seed]
    names = sorted(per_seed[0])
    return {
        "mean_per_hospital_accuracy": float(np.mean(means)),
        "std_over_seeds": float(np.std(means)),
        "per_hospital_mean_over_seeds": {h: float(np.mean([run[h] for run in per_seed])) for h in names},
        "per_seed_mean_per_hospital_accuracy": means,
    }


def pooled_reference(silos: Mapping[str, SiloArrays], plan_document: Mapping[str, Any],
                     seeds: Sequence[int]) -> dict[str, Any]:
    """The central model on the union of the training views (see the module docstring)."""
    from sklearn.linear_model import LogisticRegression

    names = sorted(silos)
    x = np.concatenate([silos[h].train_x for h in names])
    y = np.concatenate([silos[h].train_y for h in names]).ravel()
    per_seed = []
    for seed in seeds:
        model = train_local_only(_with_seed(plan_document, seed), x, y)
        per_seed.append({h: accuracy(silos[h].test_y, predict(model, silos[h].test_x)) for h in names})
    converged = LogisticRegression(C=1.0, max_iter=5000).fit(x, y > 0.5)
    sklearn_accuracy = {h: accuracy(silos[h].test_y, converged.predict_proba(silos[h].test_x)[:, 1]) for h in names}
    return {
        "note": POOLED_NOTE, **_summary(per_seed), "trained_on": int(len(y)),
        "sklearn_converged": {"note": SKLEARN_NOTE,
                              "mean_per_hospital_accuracy": float(np.mean(list(sklearn_accuracy.values()))),
                              "per_hospital": sklearn_accuracy},
    }


def local_only(silos: Mapping[str, SiloArrays], plan_document: Mapping[str, Any], seeds: Sequence[int]) -> dict[str, Any]:
    """Each hospital's own model on its own test view (see the module docstring)."""
    names = sorted(silos)
    per_seed = []
    for seed in seeds:
        document = _with_seed(plan_document, seed)
        per_seed.append({h: accuracy(silos[h].test_y, predict(train_local_only(document, silos[h].train_x,
                                                                                silos[h].train_y), silos[h].test_x))
                         for h in names})
    return {"note": LOCAL_ONLY_NOTE, **_summary(per_seed),
            "trained_on": {h: int(len(silos[h].train_y)) for h in names}}
