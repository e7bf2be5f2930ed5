"""The privacy statement of a plan: what its epsilon means, for whom, and what it does not cover.

A bare "epsilon = 1" is not a guarantee: it needs the unit of privacy, the neighbouring
relation, what is assumed public, the accountant, and the list of releases the number does not
cover. Modelled on TF Privacy's `compute_dp_sgd_privacy_statement` (tensorflow_privacy
.privacy.analysis.compute_dp_sgd_privacy_lib), which states the same items for one DP-SGD run;
HealthFed's statement is per plan and per silo dataset.

`privacy_statement(plan, ...)` returns a JSON-ready dict (summary.json, reports, the CLI);
`render_text(statement)` the same in plain words. Neither imports TensorFlow; with
`dataset_size` the silo's own calibration (noise multiplier, q, steps, epsilon under both
relations) is included, which costs an accountant run (fast for RDP, seconds for PLD).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from healthfed_common.dp.accounting import (
    NEIGHBOURING_RELATION,
    RELATION_DESCRIPTIONS,
    SamplingSchedule,
    epsilon_for_events,
    plan_event,
    silo_dp_parameters,
)

STATEMENT_FORMAT = 1

NOT_COVERED_ALWAYS: tuple[str, ...] = (
    "Hyper-parameter tuning: the plan's settings (model, learning rates, rounds, clipping bound, "
    "batch size) may have been chosen by looking at these same records (e.g. the Fed-Heart-Disease "
    "benchmark's grid search runs on the hospitals' training records); that search is not charged "
    "to this epsilon.",
    "Record-level, not patient-level: a patient with k records in the dataset is protected at "
    "about k times this epsilon (group privacy).",
    "The train/test split: an export's own split column is taken as given (it is the hospital's "
    "choice); without one, each record's side is drawn from that record alone (a keyed hash), so "
    "replacing a record moves no other record. The guarantee is for the train subset as split.",
    "Metadata released outside the mechanism: the dataset's size and record counts, its schema, and "
    "the audit trail of which plans ran when.",
)


def _evaluation_note(max_evaluations: int | None) -> str:
    count = ("as many evaluations as this silo's approval policy allows (max_evaluations_per_plan, default 1)"
             if max_evaluations is None else f"at most {max_evaluations} evaluation(s) of this plan's models")
    return (f"Evaluation: {count} on the held-out (test) records, each releasing exact loss, accuracy, AUC and "
            "example counts WITHOUT differential privacy. Each is recorded in the privacy ledger as a non-DP "
            "disclosure; the test records are not protected by this epsilon.")


def _preprocessing(plan: Any, public_bounds: Mapping[str, tuple[float, float]] | None) -> list[str]:
    lines = []
    for spec in plan.features:
        if spec.transform == "standardize":
            if not plan.uses_public_bounds:
                lines.append(f"{spec.name}: centred and scaled with this silo's own training mean and sample std "
                             "(a statistic of the records; the plan has no DP)")
            else:
                bounds = (public_bounds or {}).get(spec.name)
                where = f"[{bounds[0]:g}, {bounds[1]:g}]" if bounds else "the dataset policy's public bounds"
                lines.append(f"{spec.name}: clamped to {where} and scaled to [-1, 1]; missing values take the "
                             "policy's public imputation value")
        elif spec.transform == "one_hot":
            scaled = spec.standardize_indicators
            lines.append(f"{spec.name}: one 0/1 indicator per listed category"
                         + (", centred and scaled with this silo's own training mean and std" if scaled else ""))
        else:
            imputed = ("the policy's public imputation value" if plan.uses_public_bounds else "the training mean")
            lines.append(f"{spec.name}: {spec.transform} (missing values take {imputed})")
    return lines


def privacy_statement(
    plan: Any,
    *,
    dataset_size: int | None = None,
    max_evaluations: int | None = None,
    public_bounds: Mapping[str, tuple[float, float]] | None = None,
) -> dict[str, Any]:
    """The structured statement of `plan` (a `healthfed_common.plan.Plan`).

    `dataset_size`: a silo's training-record count, to include its calibration. `max_evaluations`:
    the silo policy's evaluation limit, to state how many non-DP releases there can be.
    `public_bounds`: the dataset policy's declared ranges, to name them."""
    statement: dict[str, Any] = {
        "format": STATEMENT_FORMAT,
        "plan": {"name": plan.name, "plan_hash": plan.plan_hash, "dataset": plan.dataset, "rounds": plan.rounds},
        "differentially_private": plan.dp is not None,
        "unit_of_privacy": "one record (one row of a silo's training subset of the dataset)",
        "preprocessing": _preprocessing(plan, public_bounds),
        "modelled_on": "TF Privacy compute_dp_sgd_privacy_statement",
    }
    not_covered = [_evaluation_note(max_evaluations), *NOT_COVERED_ALWAYS]
    if plan.dp is None:
        statement.update({
            "epsilon": "infinity",  # a string: JSON has no infinity
            "delta": None,
            "mechanism": "none: the model update depends on the records without added noise",
            "accounting": "a silo charges every round of a non-DP plan as epsilon = infinity to a dataset that has "
                          "a privacy budget, or refuses it (approval policy non_private_plans_on_budgeted_datasets)",
        })
        not_covered.insert(0, "Everything: this plan is not differentially private (epsilon = infinity).")
        statement["not_covered"] = not_covered
        return statement
    dp = plan.dp
    statement.update({
        "epsilon": dp.target_epsilon,
        "delta": dp.target_delta,
        "scope": "per silo dataset, over the whole plan (every round composed); each silo adds its own noise, so "
                 "the guarantee does not depend on secure aggregation or on the other silos",
        "neighbouring_relation": {
            "name": NEIGHBOURING_RELATION,
            "meaning": RELATION_DESCRIPTIONS[NEIGHBOURING_RELATION],
            "why": "the dataset size n is public: expected_examples, dp_steps, sigma, q and the step count "
                   "all reveal it",
        },
        "public": [
            "the dataset size n of each silo and everything derived from it (q = batch_size / n, steps per "
            "round, the noise multiplier, expected_examples, dp_steps)",
            "the schema: feature names, transforms and categories, the label",
            "the dataset policy's bounds and imputation values (declared, not computed from the records)",
            "the plan itself (model, optimizers, clipping bound, rounds, seeds) and the cohort",
        ],
        "mechanism": (f"DP-SGD with Poisson sampling (each record in each step with probability q = "
                      f"batch_size / n, batch_size {plan.batch_size}), per-example L2 clipping to "
                      f"C = {dp.l2_norm_clip}, Gaussian noise N(0, (sigma C)^2) on every step's clipped sum, "
                      f"{plan.local_epochs} local epoch(s) per round, {plan.rounds} round(s)"),
        "accountant": {
            "name": dp.accountant,
            "library": "dp-accounting",
            "derivation": "replace-one from the add/remove accountant by the two-step chain "
                          "delta_rep(eps) <= min over eps1 of delta_AR(eps1) + e^eps1 delta_AR(eps - eps1) "
                          "(group privacy for 2; healthfed_common.dp.accounting)",
            "event": "SelfComposed(PoissonSampled(q, Gaussian(sigma)), steps per round) per round",
        },
    })
    if dataset_size is not None:
        params = silo_dp_parameters(plan, dataset_size)
        schedule = SamplingSchedule(dataset_size, plan.batch_size, plan.local_epochs)
        event = plan_event(schedule, params.noise_multiplier, plan.rounds)
        statement["silo_calibration"] = {
            "dataset_size": dataset_size,
            "noise_multiplier": params.noise_multiplier,
            "sampling_probability": params.sampling_probability,
            "steps_per_round": params.steps_per_round,
            "epsilon_replace_one": params.plan_epsilon,
            "epsilon_add_remove": epsilon_for_events([event], dp.target_delta, dp.accountant, "add_remove"),
        }
    statement["not_covered"] = not_covered
    return statement


def render_text(statement: Mapping[str, Any]) -> str:
    """The statement in plain words, one item per line (for `silo-node plans show`)."""
    plan = statement["plan"]
    lines = [f"Privacy statement for plan {plan['name']!r} ({plan['plan_hash'][:16]}), dataset {plan['dataset']!r}:"]
    if not statement["differentially_private"]:
        lines.append("  NOT differentially private: epsilon = infinity.")
        lines.append(f"  Accounting: {statement['accounting']}.")
    else:
        relation = statement["neighbouring_relation"]
        lines += [
            f"  Guarantee: (epsilon = {statement['epsilon']:g}, delta = {statement['delta']:g})-differential privacy "
            f"for {statement['unit_of_privacy']}, {statement['scope']}.",
            f"  Neighbouring datasets: {relation['meaning']} ({relation['why']}).",
            f"  Mechanism: {statement['mechanism']}.",
            f"  Accountant: {statement['accountant']['name']} ({statement['accountant']['library']}), "
            f"{statement['accountant']['derivation']}.",
            "  Public (not protected): " + "; ".join(statement["public"]) + ".",
        ]
        calibration = statement.get("silo_calibration")
        if calibration:
            lines.append(
                f"  This silo (n = {calibration['dataset_size']}): noise multiplier {calibration['noise_multiplier']:.4g}, "
                f"q = {calibration['sampling_probability']:.4g}, {calibration['steps_per_round']} steps per round; "
                f"epsilon {calibration['epsilon_replace_one']:.4g} replace-one "
                f"({calibration['epsilon_add_remove']:.4g} under add/remove).")
    lines.append("  Preprocessing:")
    lines += [f"    - {line}" for line in statement["preprocessing"]]
    lines.append("  Not covered by this epsilon:")
    lines += [f"    - {line}" for line in statement["not_covered"]]
    return "\n".join(lines)
