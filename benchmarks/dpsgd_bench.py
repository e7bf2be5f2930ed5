"""DP-SGD step time against non-private SGD, same model, same batch, same run.

Two levels, both measured in one process run:
- `step`: one training step as a `tf.function` -- non-private (`tape.gradient` of the mean
  loss) vs HealthFed's DP-SGD step (`per_example_gradients` + `dp_sgd_gradient`: per-example
  gradients by vectorized_map, clipping, GaussianSumQuery noise), each followed by the same SGD update.
- `work`: the MapReduceForm `work` graph a silo really runs (GraphComputation, in-process),
  DP FedAvg vs TFF's `build_weighted_fed_avg`, on the same number of steps of the same batch
  size (fixed batches for non-private, Poisson batches of that expected size for DP).

Usage: .venv/bin/python benchmarks/dpsgd_bench.py [--out bench-results/dpsgd.json] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def _models() -> dict[str, tuple[Callable[[], tf.keras.Model], tuple[int, ...], int]]:
    from healthfed_common.models import model_entry
    from healthfed_common.plan import ModelSpec

    return {
        "logistic_regression_13": (
            lambda: model_entry("logistic_regression").build(ModelSpec(id="logistic_regression"), (13,), 0),
            (13,), 32,
        ),
        "mlp_13_64x64": (
            lambda: model_entry("mlp").build(ModelSpec(id="mlp", hidden_units=(64, 64)), (13,), 0),
            (13,), 64,
        ),
        "mlp_13_64x64_b256": (
            lambda: model_entry("mlp").build(ModelSpec(id="mlp", hidden_units=(64, 64)), (13,), 0),
            (13,), 256,
        ),
        "small_cnn_32x32": (
            lambda: model_entry("small_cnn").build(ModelSpec(id="small_cnn", image_size=32), (32, 32, 1), 0),
            (32, 32, 1), 32,
        ),
    }


def _time(fn: Callable[[], Any], repeats: int, inner: int) -> float:
    """Median seconds per call over `repeats` timings of `inner` calls (after warm-up)."""
    for _ in range(3):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples)


def bench_step(name: str, build: Callable[[], tf.keras.Model], shape: tuple[int, ...], batch: int,
               repeats: int) -> dict[str, Any]:
    from healthfed_common.dp.client_work import (
        binary_crossentropy_per_example,
        dp_sgd_gradient,
        per_example_gradients,
    )

    class _Predictor:
        """The one method of a TFF VariableModel that per_example_gradients uses."""

        def __init__(self, keras_model: tf.keras.Model) -> None:
            self._keras_model = keras_model

        def predict_on_batch(self, inputs: tf.Tensor, training: bool = True) -> tf.Tensor:
            return self._keras_model(inputs, training=training)

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(batch, *shape)), tf.float32)
    y = tf.constant(rng.integers(0, 2, size=(batch, 1)), tf.float32)
    model = build()
    variables = model.trainable_variables
    predictor = _Predictor(model)
    lr = 0.05

    @tf.function
    def plain_step() -> None:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(binary_crossentropy_per_example(y, model(x, training=True)))
        for v, g in zip(variables, tape.gradient(loss, variables)):
            v.assign_sub(lr * g)

    @tf.function
    def dp_step() -> None:
        per_example = per_example_gradients(predictor, variables, x, y, binary_crossentropy_per_example)
        grads = dp_sgd_gradient(per_example, l2_norm_clip=1.0, noise_multiplier=tf.constant(1.0),
                                expected_batch_size=tf.constant(float(batch)))
        for v, g in zip(variables, grads):
            v.assign_sub(lr * g)

    inner = 20
    plain = _time(plain_step, repeats, inner)
    dp = _time(dp_step, repeats, inner)
    return {"model": name, "batch_size": batch, "params": int(sum(np.prod(v.shape) for v in variables)),
            "non_private_step_ms": plain * 1e3, "dp_sgd_step_ms": dp * 1e3, "ratio": dp / plain}


def bench_work(repeats: int) -> dict[str, Any]:
    """The silo's real `work` graph, DP vs non-private FedAvg, MLP 13-64-64-1."""
    import collections

    import tensorflow_federated as tff

    from healthfed_common.dp.accounting import SamplingSchedule
    from healthfed_common.dp.process import build_dp_fed_avg
    from healthfed_common.dp.sampling import poisson_dataset_factory
    from healthfed_common.models import model_entry
    from healthfed_common.plan import ModelSpec
    from healthfed_common.tf_graph import GraphComputation

    width, batch, n, epochs = 13, 64, 4096, 1
    spec = (tf.TensorSpec([None, width], tf.float32), tf.TensorSpec([None, 1], tf.float32))

    def model_fn() -> Any:
        keras = model_entry("mlp").build(ModelSpec(id="mlp", hidden_units=(64, 64)), (width,), 0)
        return tff.learning.models.from_keras_model(keras, loss=tf.keras.losses.BinaryCrossentropy(), input_spec=spec)

    def graphs(process: Any) -> tuple[GraphComputation, list[np.ndarray]]:
        mrf = tff.backends.mapreduce.get_map_reduce_form_for_computation(process.next)
        init = tff.backends.mapreduce.get_state_initialization_computation(process.initialize)
        state = GraphComputation(tff.framework.serialize_computation(init))()
        client_input = GraphComputation(tff.framework.serialize_computation(mrf.prepare))(state)
        return GraphComputation(tff.framework.serialize_computation(mrf.work)), client_input

    sgd = tff.learning.optimizers.build_sgdm(0.05)
    dp_work, dp_input = graphs(build_dp_fed_avg(model_fn, client_optimizer=sgd, server_optimizer=tff.learning.optimizers.build_sgdm(1.0), l2_norm_clip=1.0))
    plain_work, plain_input = graphs(tff.learning.algorithms.build_weighted_fed_avg(
        model_fn, client_optimizer_fn=sgd, server_optimizer_fn=tff.learning.optimizers.build_sgdm(1.0)))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, width)).astype(np.float32)
    y = (x[:, :1] + 0.3 * rng.normal(size=(n, 1)) > 0).astype(np.float32)
    schedule = SamplingSchedule(n, batch, epochs)
    dp_data = poisson_dataset_factory(x, y, schedule=schedule, noise_multiplier=1.0)

    def plain_data() -> tf.data.Dataset:
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)

    plain = _time(lambda: plain_work(plain_input, [plain_data]), repeats, 1)
    dp = _time(lambda: dp_work(dp_input, [dp_data]), repeats, 1)
    steps = schedule.steps_per_round
    return {"model": "mlp_13_64x64", "batch_size": batch, "steps_per_call": steps,
            "non_private_work_s": plain, "dp_sgd_work_s": dp,
            "non_private_step_ms": plain / steps * 1e3, "dp_sgd_step_ms": dp / steps * 1e3,
            "ratio": dp / plain}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-results/dpsgd.json"))
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    step_results = [bench_step(name, *spec, repeats=args.repeats) for name, spec in _models().items()]
    for r in step_results:
        print(f"step {r['model']:<24} batch {r['batch_size']:>3}: non-private {r['non_private_step_ms']:.3f} ms, "
              f"DP-SGD {r['dp_sgd_step_ms']:.3f} ms, ratio {r['ratio']:.2f}x", flush=True)
    work = bench_work(max(3, args.repeats // 2))
    print(f"work {work['model']}: non-private {work['non_private_work_s']:.3f} s, DP-SGD {work['dp_sgd_work_s']:.3f} s "
          f"({work['steps_per_call']} steps), ratio {work['ratio']:.2f}x", flush=True)
    result = {
        "benchmark": "dpsgd_step_time",
        "command": " ".join([".venv/bin/python benchmarks/dpsgd_bench.py", *(argv if argv is not None else sys.argv[1:])]),
        "target": "DP-SGD step time <= 2x non-private (Opacus reports 2.6-8x)",
        "method": "median over repeats of per-call wall time after 3 warm-up calls; same model, same "
                  "batch, same process; DP = per-example gradients (vectorized_map) + clip + GaussianSumQuery noise",
        "step": step_results,
        "work": work,
        "machine": {
            "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "tensorflow": tf.__version__, "devices": [d.device_type for d in tf.config.list_physical_devices()],
            "note": "shared CPU (other jobs running), inter-op threads 1",
        },
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
