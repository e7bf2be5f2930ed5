"""A canary audit of a silo's DP-SGD round, end to end through the silo's own code.

What runs, per audit: the plan's real MapReduceForm (`build_federated_computations`, the graph
every silo builds and fingerprints), the real training view (`silo_node.datasets.view`: the
preprocessing under test), the real calibration (`silo_dp_parameters`: sigma for the plan's
replace-one epsilon on this n), and the real sampling and noise-seed entropy
(`healthfed_common.dp.sampling`), many times, on two neighbouring datasets of the same size:

    D  = base records + canary      (chol = 9999, label 1: an outlier, the review's attack)
    D' = base records + replacement (chol = 600, label 0: opposite clipped gradient)

then `healthfed_common.dp.audit.epsilon_lower_bound` on the attacker's score of the released
(quantized) update. With `preprocessing="public_bounds"` (what a silo does for DP plans) the
lower bound must stay below the claimed epsilon. With `preprocessing="train_standardisation"`
(the view a silo used before: train-set mean/std, as non-DP plans still do) the outlier moves
every base record's features, the update moves by many times the clipping bound, and the audit
must find an epsilon above the claim: the negative control that shows the audit can fail.

The base records are chosen so that the leak is visible (cholesterol correlated with the label,
as in the Fed-Heart-Disease data); q = 1 and one step by default (a Gaussian mechanism on the
clipped sum: the simplest case in which the accountant's epsilon is nearly tight).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

Preprocessing = Literal["public_bounds", "train_standardisation"]
CHOL_BOUNDS = (100.0, 600.0)  # public clinical range of serum cholesterol, mg/dL
CANARY = {"chol": 9999.0, "num": "1"}
REPLACEMENT = {"chol": 600.0, "num": "0"}


@dataclass(frozen=True)
class AuditSetting:
    claimed_epsilon: float = 2.0
    delta: float = 1e-5
    model: str = "logistic_regression"
    hidden_units: tuple[int, ...] = ()
    n_base: int = 50
    batch_size: int | None = None  # None: the whole dataset (q = 1)
    local_epochs: int = 1
    l2_norm_clip: float = 0.5
    runs_per_side: int = 100
    calibration_runs: int = 30


def audit_plan(setting: AuditSetting) -> Any:
    from healthfed_common.plan import parse_plan

    n = setting.n_base + 1
    model: dict[str, Any] = {"id": setting.model}
    if setting.model == "logistic_regression":
        model["kernel_initializer"] = "zeros"
    if setting.hidden_units:
        model["hidden_units"] = list(setting.hidden_units)
    return parse_plan({
        "name": "privacy-audit", "dataset": "audit", "model": model,
        "features": [{"name": "chol", "transform": "standardize"}],
        "label": {"name": "num", "positive_values": ["1"]},
        "client_optimizer": {"name": "sgd", "learning_rate": 1.0},
        "local_epochs": setting.local_epochs, "batch_size": setting.batch_size or n, "rounds": 1,
        "min_silos_per_round": 1,
        "dp": {"target_epsilon": setting.claimed_epsilon, "target_delta": setting.delta,
               "l2_norm_clip": setting.l2_norm_clip, "accountant": "rdp"},
    })


def base_frame(n_base: int) -> pd.DataFrame:
    """Deterministic base records: label 1 with higher cholesterol than label 0."""
    rng = np.random.default_rng(20231101)
    labels = np.arange(n_base) % 2
    chol = np.where(labels == 1, 260.0, 180.0) + rng.normal(0, 15, n_base)
    return pd.DataFrame({"chol": chol.round(0), "num": labels.astype(str)})


def training_arrays(extra: dict[str, Any], setting: AuditSetting, preprocessing: Preprocessing,
                    plan: Any) -> tuple[np.ndarray, np.ndarray]:
    """The silo's training view of base + `extra` under `preprocessing`."""
    from silo_node.datasets.minimisation import SPLIT_COLUMN
    from silo_node.datasets.policy import DatasetPolicy
    from silo_node.datasets.view import tabular_view

    frame = pd.concat([base_frame(setting.n_base), pd.DataFrame([extra])], ignore_index=True)
    frame[SPLIT_COLUMN] = "train"
    policy = DatasetPolicy.from_document({
        "features": {"chol": {"transforms": ["standardize"], "bounds": list(CHOL_BOUNDS)}}, "label": "num"})
    view_plan = plan if preprocessing == "public_bounds" else plan.model_copy(update={"dp": None})
    view = tabular_view("audit", frame, view_plan, "train", policy)
    return view.features, view.labels


def run_audit(setting: AuditSetting, preprocessing: Preprocessing, computations: Any | None = None) -> dict[str, Any]:
    """One audit: returns the claimed and the empirical epsilon and how they were obtained."""
    from healthfed_common.dp.accounting import SamplingSchedule, silo_dp_parameters
    from healthfed_common.dp.audit import RepeatedWork, epsilon_lower_bound, update_vector
    from healthfed_common.learning_process import build_federated_computations

    started, cpu_started = time.time(), time.process_time()
    plan = audit_plan(setting)
    comps = computations if computations is not None else build_federated_computations(plan)
    client_input = comps.prepare(comps.initialize())
    n = setting.n_base + 1
    params = silo_dp_parameters(plan, n)
    schedule = SamplingSchedule(n, plan.batch_size, plan.local_epochs)
    x_in, y_in = training_arrays(CANARY, setting, preprocessing, plan)
    x_out, y_out = training_arrays(REPLACEMENT, setting, preprocessing, plan)

    def runner(x: np.ndarray, y: np.ndarray, sigma: float) -> RepeatedWork:
        return RepeatedWork(comps.work, client_input, x, y, schedule, sigma)

    # The attacker's statistic: projection on the difference of the noise-free updates
    # (exact for q = 1; an approximation, still a valid test, for Poisson sampling).
    clean_in = np.mean([update_vector(runner(x_in, y_in, 0.0).run()) for _ in range(1 if plan.batch_size >= n else 20)], axis=0)
    clean_out = np.mean([update_vector(runner(x_out, y_out, 0.0).run()) for _ in range(1 if plan.batch_size >= n else 20)], axis=0)
    direction = clean_in - clean_out
    centre = 0.5 * (clean_in + clean_out)

    def scores(work: RepeatedWork, runs: int) -> np.ndarray:
        return np.array([float(np.dot(update_vector(work.run()) - centre, direction)) for _ in range(runs)])

    noisy_in, noisy_out = runner(x_in, y_in, params.noise_multiplier), runner(x_out, y_out, params.noise_multiplier)
    calibration = scores(noisy_out, setting.calibration_runs)  # thresholds come from these only
    spread = float(calibration.std(ddof=1)) or 1.0
    thresholds = [float(calibration.mean() + k * spread) for k in (0.0, 1.0, 2.0, 3.0, 4.0)]
    result = epsilon_lower_bound(scores(noisy_in, setting.runs_per_side), scores(noisy_out, setting.runs_per_side),
                                 thresholds, setting.delta)
    return {
        "preprocessing": preprocessing,
        "model": setting.model + (f" {list(setting.hidden_units)}" if setting.hidden_units else ""),
        "claimed_epsilon": setting.claimed_epsilon,
        "claimed_epsilon_replace_one_as_calibrated": params.plan_epsilon,
        "delta": setting.delta,
        "neighbouring_relation": "replace_one",
        "noise_multiplier": params.noise_multiplier,
        "l2_norm_clip": setting.l2_norm_clip,
        "dataset_size": n,
        "sampling_probability": schedule.sampling_probability,
        "steps": schedule.steps_per_round,
        "noise_free_update_distance": float(np.linalg.norm(direction)),
        **result.as_dict(),
        "violation": result.epsilon_lower_bound > setting.claimed_epsilon,
        "wall_s": round(time.time() - started, 2),
        "cpu_s": round(time.process_time() - cpu_started, 2),
        "pid": os.getpid(),
    }
