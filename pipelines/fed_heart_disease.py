"""Fed-Heart-Disease (FLamby protocol), no DP and record-level DP-SGD -- in-process prototype.

Runs the federation's real MapReduceForm components (`initialize`, `prepare`, `work` per
hospital, `zero/accumulate/merge/report`, `update`) in this process through
`GraphComputation` -- no TFF runtime, no processes -- to choose hyper-parameters on the
hospitals' TRAINING data (a stratified validation split of each train set) and then report
the mean per-hospital TEST accuracy over 5 seeds. The multi-process run through the lead's
silo/aggregator harness replaces `run_federation` when it exists; the data protocol and the
figures stay the same.

Data protocol (../shared/data/fed_heart_disease/README.md, followed exactly): drop slope, ca,
thal; drop rows with a missing value; label num > 0; `train_test_split(arange(n),
train_size=0.66, test_size=0.34, random_state=43, shuffle=True, stratify=label)`; one-hot cp
and restecg, first level dropped (13 features); standardise with each hospital's own train
mean/std (a column constant in a hospital's train set -- Switzerland's chol is all 0 --
gets std 1, i.e. is only centred). Data are read from the shared folder, never copied.

Usage: .venv/bin/python -m pipelines.fed_heart_disease [--data DIR] [--out FILE] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HOSPITALS = ("cleveland", "hungarian", "switzerland", "va")
COLUMNS = ("age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalach", "exang",
           "oldpeak", "slope", "ca", "thal", "num")
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "fed_heart_disease"
WIDTH = 13


@dataclass(frozen=True)
class Hospital:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_hospital(data_dir: Path, name: str) -> Hospital:
    """One hospital's train/test arrays by the FLamby protocol (see module docstring)."""
    import pandas as pd
    from sklearn.model_selection import train_test_split

    frame = pd.read_csv(data_dir / f"processed.{name}.data", header=None, names=list(COLUMNS),
                        na_values="?")
    frame = frame.drop(columns=["slope", "ca", "thal"]).dropna().reset_index(drop=True)
    label = (frame["num"] > 0).astype(np.float32).to_numpy()
    # Switzerland keeps 45 positives and 1 negative: scikit-learn refuses to stratify a
    # class of one member, so that hospital alone is split unstratified (same sizes, 30/16).
    stratify = label if np.bincount(label.astype(int), minlength=2).min() >= 2 else None
    train_idx, test_idx = train_test_split(
        np.arange(len(frame)), train_size=0.66, test_size=0.34, random_state=43, shuffle=True,
        stratify=stratify,
    )
    features = pd.DataFrame({
        "age": frame["age"], "sex": frame["sex"],
        "cp_2": (frame["cp"] == 2).astype(float), "cp_3": (frame["cp"] == 3).astype(float),
        "cp_4": (frame["cp"] == 4).astype(float),
        "trestbps": frame["trestbps"], "chol": frame["chol"], "fbs": frame["fbs"],
        "restecg_1": (frame["restecg"] == 1).astype(float), "restecg_2": (frame["restecg"] == 2).astype(float),
        "thalach": frame["thalach"], "exang": frame["exang"], "oldpeak": frame["oldpeak"],
    }).to_numpy(dtype=np.float64)
    mean = features[train_idx].mean(axis=0)
    std = features[train_idx].std(axis=0)
    std[std == 0] = 1.0
    scaled = ((features - mean) / std).astype(np.float32)
    return Hospital(name, scaled[train_idx], label[train_idx, None], scaled[test_idx], label[test_idx, None])


def validation_split(h: Hospital, seed: int = 0) -> Hospital:
    """Hyper-parameter selection data: the hospital's train set split 75/25 (stratified where
    both classes have 2+ records); the test set is not touched."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(h.y_train))
    counts = np.bincount(h.y_train[:, 0].astype(int), minlength=2)
    stratify = h.y_train[:, 0] if counts.min() >= 2 else None  # Switzerland: 1 negative
    tr, va = train_test_split(idx, test_size=0.25, random_state=seed, shuffle=True, stratify=stratify)
    return Hospital(h.name, h.x_train[tr], h.y_train[tr], h.x_train[va], h.y_train[va])


@dataclass(frozen=True)
class Config:
    rounds: int = 20
    local_epochs: int = 1
    batch_size: int = 16
    client_lr: float = 0.1
    server_lr: float = 1.0
    l2_norm_clip: float = 1.0
    epsilon: float | None = None  # None: no DP
    delta: float = 1e-3
    accountant: str = "pld"


@dataclass
class Federation:
    """The MapReduceForm of one configuration as in-process graphs."""

    config: Config
    graphs: dict[str, Any] = field(default_factory=dict)
    accumulate_leaves: int = 0


def _model_fn() -> Any:
    import tensorflow as tf
    import tensorflow_federated as tff

    from healthfed_common.models import model_entry
    from healthfed_common.plan import ModelSpec

    keras = model_entry("logistic_regression").build(ModelSpec(id="logistic_regression"), (WIDTH,), 0)
    return tff.learning.models.from_keras_model(
        keras, loss=tf.keras.losses.BinaryCrossentropy(),
        input_spec=(tf.TensorSpec([None, WIDTH], tf.float32), tf.TensorSpec([None, 1], tf.float32)),
    )


def build_federation(config: Config) -> Federation:
    import tensorflow_federated as tff

    from healthfed_common.dp.process import build_dp_fed_avg
    from healthfed_common.tf_graph import GraphComputation

    client = tff.learning.optimizers.build_sgdm(config.client_lr)
    server = tff.learning.optimizers.build_sgdm(config.server_lr)
    if config.epsilon is None:
        process = tff.learning.algorithms.build_weighted_fed_avg(
            _model_fn, client_optimizer_fn=client, server_optimizer_fn=server)
    else:
        process = build_dp_fed_avg(_model_fn, client_optimizer=client, server_optimizer=server,
                                   l2_norm_clip=config.l2_norm_clip)
    mrf = tff.backends.mapreduce.get_map_reduce_form_for_computation(process.next)
    init = tff.backends.mapreduce.get_state_initialization_computation(process.initialize)
    fed = Federation(config)
    fed.graphs["initialize"] = GraphComputation(tff.framework.serialize_computation(init))
    for name in ("prepare", "work", "zero", "accumulate", "report", "update"):
        fed.graphs[name] = GraphComputation(tff.framework.serialize_computation(getattr(mrf, name)))
    fed.accumulate_leaves = len(fed.graphs["zero"].result_leaves)
    return fed


def _client_data(fed: Federation, x: np.ndarray, y: np.ndarray, sigma: float | None, seed: int) -> Any:
    from healthfed_common.dp.accounting import SamplingSchedule
    from healthfed_common.dp.sampling import poisson_dataset_factory

    c = fed.config
    if c.epsilon is None:
        rng = np.random.default_rng(seed)

        def factory() -> Any:
            import tensorflow as tf

            order = np.concatenate([rng.permutation(len(x)) for _ in range(c.local_epochs)])
            return tf.data.Dataset.from_tensor_slices((x[order], y[order])).batch(c.batch_size)

        return factory
    return poisson_dataset_factory(x, y, schedule=SamplingSchedule(len(x), c.batch_size, c.local_epochs),
                                   noise_multiplier=float(sigma or 0.0))


def run_federation(fed: Federation, hospitals: list[Hospital], seed: int) -> dict[str, Any]:
    """`rounds` rounds of the MapReduceForm over the hospitals; returns per-hospital
    accuracy of the final global model on each hospital's evaluation arrays."""
    from healthfed_common.dp.accounting import SamplingSchedule, calibrate_noise_multiplier

    c = fed.config
    g = fed.graphs
    sigmas: list[float | None] = []
    for h in hospitals:
        if c.epsilon is None:
            sigmas.append(None)
        else:
            sigmas.append(calibrate_noise_multiplier(
                target_epsilon=c.epsilon, target_delta=c.delta, rounds=c.rounds,
                schedule=SamplingSchedule(len(h.y_train), c.batch_size, c.local_epochs),
                accountant=c.accountant))  # type: ignore[arg-type]
    state = g["initialize"]()
    for r in range(c.rounds):
        client_input = g["prepare"](state)
        accumulator = g["zero"]()
        for i, h in enumerate(hospitals):
            data = _client_data(fed, h.x_train, h.y_train, sigmas[i], seed * 1000 + r * 10 + i)
            out = g["work"](client_input, [data])
            accumulator = g["accumulate"](list(accumulator) + list(out[: fed.accumulate_leaves]))
        report = g["report"](accumulator)
        result = g["update"](list(state) + list(report))
        state = result[: len(state)]
    kernel, bias = np.asarray(state[0]), np.asarray(state[1])
    accuracies = {}
    for h in hospitals:
        predictions = (h.x_test @ kernel + bias) > 0
        accuracies[h.name] = float(np.mean(predictions == (h.y_test > 0.5)))
    return {"per_hospital": accuracies, "mean": float(np.mean(list(accuracies.values()))),
            "noise_multipliers": sigmas}


def evaluate(config: Config, hospitals: list[Hospital], seeds: list[int]) -> dict[str, Any]:
    """Mean per-hospital accuracy, mean over seeds (model init fixed by the registry's seeded
    initializer; seeds vary the data order / Poisson sampling and DP noise)."""
    fed = build_federation(config)
    runs = [run_federation(fed, hospitals, seed) for seed in seeds]
    means = [r["mean"] for r in runs]
    return {"config": config.__dict__, "mean_per_hospital_accuracy": float(np.mean(means)),
            "std_over_seeds": float(np.std(means)), "runs": runs}


GRID_NO_DP = [Config(rounds=r, local_epochs=e, batch_size=b, client_lr=lr)
              for r in (10, 30) for e in (1, 5) for b in (8,) for lr in (0.01, 0.05)]


def grid_dp(epsilon: float) -> list[Config]:
    return [Config(rounds=r, local_epochs=1, batch_size=b, client_lr=lr, l2_norm_clip=clip, epsilon=epsilon)
            for r in (3, 10) for b in (16, 64) for lr in (0.5, 2.0) for clip in (0.5,)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fed-Heart-Disease, in-process prototype")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=Path("bench-results/fed_heart_disease.json"))
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one config per setting, 2 seeds")
    args = parser.parse_args(argv)
    hospitals = [load_hospital(args.data, name) for name in HOSPITALS]
    validation = [validation_split(h) for h in hospitals]
    seeds = list(range(args.seeds if not args.quick else 2))
    settings: list[tuple[str, list[Config]]] = [
        ("no_dp", GRID_NO_DP), ("eps_1", grid_dp(1.0)), ("eps_0.1", grid_dp(0.1)),
    ]
    results: dict[str, Any] = {}
    for label, grid in settings:
        grid = grid[:1] if args.quick else grid
        started = time.time()
        scored = []
        for config in grid:  # selection on validation splits of the TRAIN sets only
            score = evaluate(config, validation, seeds[:2])["mean_per_hospital_accuracy"]
            scored.append((score, config))
            print(f"[{label}] val {score:.3f} {config}", flush=True)
        best_score, best = max(scored, key=lambda item: item[0])
        test = evaluate(best, hospitals, seeds)
        results[label] = {"selected": best.__dict__, "validation_accuracy": best_score,
                          "test": test, "grid_size": len(grid), "seconds": time.time() - started}
        print(f"[{label}] TEST mean per-hospital accuracy {test['mean_per_hospital_accuracy']:.3f} "
              f"(+-{test['std_over_seeds']:.3f}) with {best}", flush=True)
    summary = {
        "benchmark": "fed_heart_disease",
        "mode": "in-process MapReduceForm (GraphComputation), not yet the multi-process federation",
        "protocol": "FLamby Fed-Heart-Disease (shared/data/fed_heart_disease/README.md)",
        "targets": {"no_dp": 0.75, "eps_1": 0.72, "eps_0.1": 0.68},
        "delta": 1e-3,
        "results": {k: {"test_mean_per_hospital_accuracy": v["test"]["mean_per_hospital_accuracy"],
                        "std_over_seeds": v["test"]["std_over_seeds"],
                        "selected": v["selected"], "validation_accuracy": v["validation_accuracy"]}
                    for k, v in results.items()},
        "details": results,
        "command": " ".join([".venv/bin/python -m pipelines.fed_heart_disease", *(argv or sys.argv[1:])]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
