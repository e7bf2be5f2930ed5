"""How the demo's hospitals and plan were chosen (issue 16): a reproducible search, run on
exports drawn with seed 11, never on the demo's own seed (7).

The demo must show what federating is for: a model that beats every hospital's local-only
model on the union of their held-out records, clearly, although the federated model is trained
with DP-SGD and the local-only ones are not. How far it leads depends on the synthetic
hospitals (sizes, event rate, which risk factor each lacks) and on the plan (batch size,
learning rate, rounds). Running the real demo (~95 s) per candidate and per DP noise draw is too
slow for a search, so this module simulates the demo's training in numpy with the arithmetic of
the silo's client work (healthfed_common.dp.client_work): per round, each hospital runs
`steps_per_round` DP-SGD steps on Poisson batches with sampling probability q, clips every
example's gradient to L2 norm C, adds N(0, (sigma C)^2) with sigma from `silo_dp_parameters`
(the silo's own calibration), divides by the expected batch qn; the server averages the
hospitals' model deltas weighted by their `update_weight` (steps_per_round * qn, `round_weight`)
and applies them with rate 1 (the demo's server SGD). The model is the demo's MLP (16 ReLU
units, a sigmoid output). What differs from the real demo: initial weights (a numpy Glorot draw,
not Keras's), the noise and sampling generators (seeded here, OS entropy there), float64 instead
of float32, no quantisation or clipping for the secure sum, and the local-only reference is
numpy mini-batch SGD rather than the demo's Keras one (pipelines.demo_reference). So its figures
rank candidates; the real demo's are the ones reported.

The search was not one grid fixed in advance but three steps, each after seeing the earlier
steps' seed-11 scores (`SEARCH_LOG`, replayed exactly by this module); the earlier demo
design's seed-7 figures had been seen, which is why the search runs on seed 11. Each candidate
gets four DP noise draws; its score is the smaller of its worst-draw leads in AUC and in balanced
accuracy over the best local-only model. Steps 1 and 2 tried designs with the old intercept
(-3.3: 25-33 % events on seed 11); step 3 raised it to -2.6 (36-43 %), because at the lower
event rates the 0.5 threshold sits far from the event rate and a DP-noised model's balanced
accuracy swung with the plan (worst-draw leads from -0.117 to +0.048 over steps 1 and 2). The
choice is the best score among step 3's intercept -2.6 designs: "double size, intercept -2.6"
(43 % events on seed 11), batch 256, rate 3.0, 8 rounds, score +0.032. Stated plainly: on the
raw score one intercept -3.3 candidate ("double size", batch 256, rate 3.0, 8 rounds) scored
higher (+0.048). The choice was then checked with the real demo on seed 11: two runs (the
second as `python -m pipelines.demo --export-seed 11`, 2026-11-26) gave federated AUC 0.853 and
0.853 against the best local-only model's 0.790, balanced accuracy 0.776 and 0.756 against
0.719; after it was committed, on the demo's seed 7 (README).

    .venv/bin/python -m pipelines.demo_design_search            # the 40 candidates, ~4.5 min on 2 cores
    .venv/bin/python -m pipelines.demo_design_search --quick    # the chosen candidate only

Writes bench-results/demo_design_search.json (every candidate's figures, each design's event
rate and hospitals, the choice, the command and the machine).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from pipelines import demo, demo_reference, synthetic_ehr
from pipelines.machine_info import cpu_model

SEARCH_SEED = 11  # the exports the search sees; the demo draws its own with synthetic_ehr.DEMO_EXPORT_SEED
NOISE_DRAWS = 4
HIDDEN_UNITS = 16

# Designs, in the order they were tried: (hospital size factor, risk-model intercept, whether
# each hospital lacks TWO of the three strong risk factors instead of one).
DESIGNS: dict[str, dict[str, Any]] = {
    "as before: 800/600/400 patients, intercept -3.3": {"size": 1, "intercept": -3.3, "one_factor_each": False},
    "double size, intercept -3.3": {"size": 2, "intercept": -3.3, "one_factor_each": False},
    "one strong factor per hospital, intercept -3.3": {"size": 1, "intercept": -3.3, "one_factor_each": True},
    "one strong factor per hospital, double size, intercept -3.3": {"size": 2, "intercept": -3.3,
                                                                     "one_factor_each": True},
    "one strong factor per hospital, double size, intercept -2.6": {"size": 2, "intercept": -2.6,
                                                                     "one_factor_each": True},
    "double size, intercept -2.6": {"size": 2, "intercept": -2.6, "one_factor_each": False},
}
# Step 3 tried the designs with the higher event rate (intercept -2.6); the choice is the best
# score among them (see the module docstring).
CHOSEN_INTERCEPT = -2.6


def _plans(batches: tuple[int, ...], rates: tuple[float, ...], rounds: tuple[int, ...]) -> list[dict[str, Any]]:
    return [{"batch_size": b, "learning_rate": r, "rounds": n} for b, r, n in itertools.product(batches, rates, rounds)]


# The three steps of the search, in order: (designs, plans) per step.
SEARCH_LOG: tuple[tuple[tuple[str, ...], list[dict[str, Any]]], ...] = (
    (("as before: 800/600/400 patients, intercept -3.3", "double size, intercept -3.3",
      "one strong factor per hospital, intercept -3.3", "one strong factor per hospital, double size, intercept -3.3"),
     _plans((32, 64, 128), (0.6, 1.5), (8,))),
    (("double size, intercept -3.3",), _plans((128, 256), (1.5, 3.0), (8, 12))),
    (("one strong factor per hospital, double size, intercept -2.6", "double size, intercept -2.6"),
     _plans((128, 256), (1.5, 3.0), (8,))),
)
CHOSEN_DESIGN = "double size, intercept -2.6"  # what the shipped demo is; the search must agree


def hospitals(design: dict[str, Any]) -> list[synthetic_ehr.HospitalProfile]:
    """The three demo hospitals under `design` (the base profiles are the demo's own)."""
    sizes = [800 * design["size"], 600 * design["size"], 400 * design["size"]]
    profiles = [dataclasses.replace(h, patients=n) for h, n in zip(synthetic_ehr.DEMO_HOSPITALS, sizes)]
    if design["one_factor_each"]:  # St Mary's: typical angina only; Riverside: diabetes; Hillcrest: smoking
        profiles = [
            dataclasses.replace(profiles[0], smoker_rate=0.0, diabetes_rate=0.0, chest_pain_mix=(0.5, 0.2, 0.15, 0.15)),
            dataclasses.replace(profiles[1], smoker_rate=0.0, diabetes_rate=0.6, chest_pain_mix=(0.0, 0.35, 0.40, 0.25)),
            dataclasses.replace(profiles[2], smoker_rate=0.6, diabetes_rate=0.0, chest_pain_mix=(0.0, 0.35, 0.45, 0.20)),
        ]
    return profiles


@contextmanager
def intercept(value: float) -> Iterator[None]:
    """The risk model's intercept for one design (the generator reads the module's constant)."""
    saved = synthetic_ehr.RISK_INTERCEPT
    synthetic_ehr.RISK_INTERCEPT = value
    try:
        yield
    finally:
        synthetic_ehr.RISK_INTERCEPT = saved


def silo_data(design: dict[str, Any], work: Path) -> dict[str, demo_reference.SiloArrays]:
    """Each hospital's training view of its seed-11 export, through the silo's own code."""
    plan = demo.demo_plan()
    silos = {}
    with intercept(design["intercept"]):
        for index, profile in enumerate(hospitals(design)):
            path = work / f"{profile.silo_id}.csv"
            synthetic_ehr.generate_export(profile, SEARCH_SEED + index).to_csv(path, index=False)
            silos[profile.silo_id] = demo_reference.silo_arrays(path, plan, demo.DATASET_POLICY, demo.DATASET)
    return silos


Weights = list[NDArray[np.float64]]


def initial_weights(inputs: int, seed: int) -> Weights:
    rng = np.random.default_rng(seed)
    first, second = np.sqrt(6 / (inputs + HIDDEN_UNITS)), np.sqrt(6 / (HIDDEN_UNITS + 1))
    return [rng.uniform(-first, first, (inputs, HIDDEN_UNITS)), np.zeros(HIDDEN_UNITS),
            rng.uniform(-second, second, (HIDDEN_UNITS, 1)), np.zeros(1)]


def _forward(weights: Weights, x: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any], NDArray[np.float64]]:
    """The MLP's hidden pre-activations, hidden activations and output probabilities."""
    pre = x @ weights[0] + weights[1]
    hidden = np.maximum(pre, 0)
    return pre, hidden, np.asarray(1 / (1 + np.exp(-(hidden @ weights[2] + weights[3])[:, 0])), dtype=np.float64)


def predict(weights: Weights, x: NDArray[Any]) -> NDArray[np.float64]:
    return _forward(weights, x)[2]


def per_example_gradients(weights: Weights, x: NDArray[Any], y: NDArray[Any]) -> Weights:
    """Binary cross-entropy gradients, one slice per example along axis 0."""
    pre, hidden, probability = _forward(weights, x)
    out = (probability - y)[:, None]
    back = out @ weights[2].T * (pre > 0)
    return [x[:, :, None] * back[:, None, :], back, hidden[:, :, None] * out[:, None, :], out]


def dp_sgd_round(weights: Weights, x: NDArray[Any], y: NDArray[Any], rate: float, sigma: float, q: float,
                 steps: int, rng: np.random.Generator, clip: float = 1.0) -> Weights:
    """One hospital's round of DP-SGD as the silo runs it (see the module docstring)."""
    weights = [w.copy() for w in weights]
    expected_batch = q * len(y)
    for _ in range(steps):
        batch = rng.random(len(y)) < q
        grads = per_example_gradients(weights, x[batch], y[batch])
        norms = np.sqrt(sum((g.reshape(len(g), -1) ** 2).sum(axis=1) for g in grads))
        scale = np.minimum(1.0, clip / np.maximum(norms, 1e-12))
        for w, g in zip(weights, grads):
            clipped_sum = (g * scale.reshape((-1,) + (1,) * (g.ndim - 1))).sum(axis=0)
            w -= rate * (clipped_sum + rng.normal(0, sigma * clip, w.shape)) / expected_batch
    return weights


def round_weight(params: Any) -> float:
    """A hospital's weight in the server's average: the silo's `update_weight`, the sum of the
    expected batch sizes over its round's steps (healthfed_common.dp.client_work), i.e.
    steps_per_round * q * n -- not n, since steps_per_round = local_epochs * ceil(n / batch)."""
    return float(params.steps_per_round * params.expected_batch_size)


def federated(silos: dict[str, demo_reference.SiloArrays], plan_document: dict[str, Any],
              rng: np.random.Generator) -> Weights:
    from healthfed_common.dp.accounting import silo_dp_parameters
    from healthfed_common.plan import parse_plan

    plan = parse_plan(plan_document)
    weights = initial_weights(next(iter(silos.values())).train_x.shape[1], plan.seeds.model_init)
    params = {name: silo_dp_parameters(plan, len(a.train_y)) for name, a in silos.items()}
    for _ in range(plan.rounds):
        deltas, examples = [], []
        for name, arrays in silos.items():
            p = params[name]
            local = dp_sgd_round(weights, arrays.train_x, arrays.train_y.astype(float),
                                 plan.client_optimizer.learning_rate, p.noise_multiplier, p.sampling_probability,
                                 p.steps_per_round, rng, clip=p.l2_norm_clip)
            deltas.append([new - old for new, old in zip(local, weights)])
            examples.append(round_weight(p))
        total = sum(examples)
        weights = [w + sum(n * d[i] for n, d in zip(examples, deltas)) / total for i, w in enumerate(weights)]
    return weights


def local_only(arrays: demo_reference.SiloArrays, plan_document: dict[str, Any]) -> Weights:
    """Plain mini-batch SGD, the same passes as the federation ran on these records."""
    rng = np.random.default_rng(plan_document["seeds"]["data_order"])
    weights = initial_weights(arrays.train_x.shape[1], plan_document["seeds"]["model_init"])
    y = arrays.train_y.astype(float)
    batch, rate = plan_document["batch_size"], plan_document["client_optimizer"]["learning_rate"]
    for _ in range(plan_document["rounds"] * plan_document["local_epochs"]):
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch):
            rows = order[start:start + batch]
            for w, g in zip(weights, per_example_gradients(weights, arrays.train_x[rows], y[rows])):
                w -= rate * g.mean(axis=0)
    return weights


def shipped_candidate() -> dict[str, Any]:
    """The demo plan's searched settings, in a candidate's form."""
    document = demo.demo_plan()
    return {"batch_size": document["batch_size"], "learning_rate": document["client_optimizer"]["learning_rate"],
            "rounds": document["rounds"]}


def plan_for(candidate: dict[str, Any]) -> dict[str, Any]:
    document = demo.demo_plan(candidate["rounds"])
    document["batch_size"] = candidate["batch_size"]
    document["client_optimizer"] = {"name": "sgd", "learning_rate": candidate["learning_rate"]}
    return document


def score(silos: dict[str, demo_reference.SiloArrays], candidate: dict[str, Any]) -> dict[str, Any]:
    """Four noise draws of the federated model against every hospital's local-only model."""
    document = plan_for(candidate)
    x, y = demo_reference.held_out_union(silos)
    draws = [demo_reference.binary_metrics(y, predict(federated(silos, document, np.random.default_rng(1000 + k)), x))
             for k in range(NOISE_DRAWS)]
    locals_ = {name: demo_reference.binary_metrics(y, predict(local_only(a, document), x)) for name, a in silos.items()}
    leads = {m: round(min(d[m] for d in draws) - max(v[m] for v in locals_.values()), 4)
             for m in ("auc", "balanced_accuracy")}
    return {**candidate, "federated_draws": [{m: d[m] for m in ("accuracy", "auc", "balanced_accuracy")} for d in draws],
            "local_only": {n: {m: v[m] for m in ("accuracy", "auc", "balanced_accuracy")} for n, v in locals_.items()},
            "worst_draw_lead": leads, "score": min(leads.values())}


def search(log: tuple[tuple[tuple[str, ...], list[dict[str, Any]]], ...]) -> dict[str, Any]:
    """Every candidate of `log` scored; `chosen` is the best score among the designs with
    CHOSEN_INTERCEPT and `best_overall` the best score of all (the module docstring says why
    they may differ)."""
    results = []
    designs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="healthfed-demo-search-") as folder:
        for step, (names, plans) in enumerate(log, start=1):
            for name in names:
                silos = silo_data(DESIGNS[name], Path(folder))
                labels = np.concatenate([a.train_y for a in silos.values()] + [a.test_y for a in silos.values()])
                designs[name] = {**DESIGNS[name], "event_rate_seed_11": round(float(labels.mean()), 3),
                                 "hospitals": [dataclasses.asdict(h) for h in hospitals(DESIGNS[name])]}
                for candidate in plans:
                    result = {"step": step, "design": name, **score(silos, candidate)}
                    results.append(result)
                    print(f"step {step} | {name} | batch {candidate['batch_size']} rate {candidate['learning_rate']} "
                          f"rounds {candidate['rounds']}: worst-draw lead AUC {result['worst_draw_lead']['auc']:+.3f}, "
                          f"balanced accuracy {result['worst_draw_lead']['balanced_accuracy']:+.3f}", flush=True)
    eligible = [r for r in results if DESIGNS[r["design"]]["intercept"] == CHOSEN_INTERCEPT]
    return {"designs": designs, "results": results,
            "chosen": max(eligible, key=lambda r: r["score"]) if eligible else None,
            "best_overall": max(results, key=lambda r: r["score"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipelines.demo_design_search",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only the chosen design and the demo's plan (a check)")
    parser.add_argument("--out", type=Path, default=Path("bench-results/demo_design_search.json"))
    args = parser.parse_args(argv)
    started = time.time()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    shipped = shipped_candidate()
    log = (((CHOSEN_DESIGN,), [shipped]),) if args.quick else SEARCH_LOG
    found = search(log)
    for label in ("chosen", "best_overall"):
        r = found[label]
        print(f"{label}: {r['design']}, batch {r['batch_size']}, rate {r['learning_rate']}, rounds {r['rounds']} "
              f"(score {r['score']:+.3f})")
    record = {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join([".venv/bin/python -m pipelines.demo_design_search", *(argv if argv is not None else sys.argv[1:])]),
        "rule": "score = min(worst-of-4-draws lead in AUC, in balanced accuracy) over the best local-only model, "
                f"on exports of seed {SEARCH_SEED}; chosen: the best score among the intercept {CHOSEN_INTERCEPT} "
                "designs (step 3; see pipelines/demo_design_search.py for why, and best_overall for the best score "
                "of all)",
        "shipped_plan_matches_choice": bool(found["chosen"]) and all(
            found["chosen"][k] == v for k, v in shipped.items()),
        "simulation": "numpy DP-FedAvg with the silo's calibration (see the module docstring)",
        **found,
        "wall_s": round(time.time() - started, 1),
        "machine": {"platform": platform.platform(), "cpu": cpu_model(), "cpu_count": os.cpu_count(),
                    "python": platform.python_version()},
    }
    if not args.quick:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
