"""DP-SGD step time against non-private SGD, same model, same batch, same run.

Two levels, both measured in one process run, every variant of a configuration timed
interleaved with the others (round-robin, so a burst of load from other jobs hits all of
them), in wall time and in this process's CPU time:
- `step`: one training step as a `tf.function` on a batch whose size is unknown at trace
  time (as in the client work) -- non-private (`tape.gradient` of the mean loss) vs
  HealthFed's DP-SGD step: `clipped_sum` (ghost clipping for all-Dense models, the
  per-example path otherwise) + `noised_mean` (GaussianSumQuery noise), and the per-example
  path forced (`per_example_gradients` by vectorized_map + `clip_per_example` + the same
  noise: the implementation before ghost clipping), each followed by the same SGD update.
  For the MLPs also the alternatives measured before choosing: tensorflow-privacy's
  two-pass fast clipping (registry norms, then a second backward pass of the reweighted
  loss), the per-example path under XLA (the clipped sum only: XLA has no kernel for the
  run-time-entropy seed op), and vectorized_map without its while-loop fallback.
- `work`: the MapReduceForm `work` graph a silo really runs (GraphComputation, in-process),
  DP FedAvg (ghost clipping, and per-example forced) vs TFF's `build_weighted_fed_avg`, on
  the same number of steps of the same batch size (fixed batches for non-private, Poisson
  batches of that expected size for DP).

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


def _time_interleaved(fns: dict[str, Callable[[], Any]], repeats: int, inner: int) -> dict[str, dict[str, float]]:
    """Median seconds per call (wall and process CPU) of each function over `repeats`
    rounds; each round times `inner` calls of every function in turn (after 3 warm-up calls)."""
    for fn in fns.values():
        for _ in range(3):
            fn()
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            for _ in range(inner):
                fn()
            wall[name].append((time.perf_counter() - start) / inner)
            cpu[name].append((time.process_time() - start_cpu) / inner)
    return {name: {"wall": statistics.median(wall[name]), "cpu": statistics.median(cpu[name])} for name in fns}


class _Predictor:
    """What the DP code uses of a TFF VariableModel: predict_on_batch, and the Keras model."""

    def __init__(self, keras_model: tf.keras.Model) -> None:
        self._keras_model = keras_model

    def predict_on_batch(self, inputs: tf.Tensor, training: bool = True) -> tf.Tensor:
        return self._keras_model(inputs, training=training)


def bench_step(name: str, build: Callable[[], tf.keras.Model], shape: tuple[int, ...], batch: int,
               repeats: int) -> dict[str, Any]:
    from healthfed_common.dp import ghost_clipping
    from healthfed_common.dp.client_work import (
        binary_crossentropy_per_example as loss_fn,
        clip_per_example,
        clipped_sum,
        noised_mean,
        per_example_gradients,
    )
    from healthfed_common.dp.sampling import noise_seeds

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(batch, *shape)), tf.float32)
    y = tf.constant(rng.integers(0, 2, size=(batch, 1)), tf.float32)
    signature = (tf.TensorSpec([None, *shape], tf.float32), tf.TensorSpec([None, 1], tf.float32))
    model = build()
    variables = model.trainable_variables
    predictor = _Predictor(model)
    lr, clip, sigma = 0.05, 1.0, tf.constant(1.0)
    ghost = ghost_clipping.supports_ghost_clipping(model, variables)

    def apply(grads: list[tf.Tensor]) -> None:
        for v, g in zip(variables, grads):
            v.assign_sub(lr * g)

    bench_seed = tf.constant(noise_seeds(1)[0])

    def noise(summed: list[tf.Tensor], x: tf.Tensor) -> list[tf.Tensor]:
        # one OS-entropy seed for the whole timing loop: same ops and cost as a fresh one per step
        return noised_mean(summed, l2_norm_clip=clip, noise_multiplier=sigma,
                           expected_batch_size=tf.cast(tf.shape(x)[0], tf.float32), noise_seed=bench_seed)

    def per_example_sum(x: tf.Tensor, y: tf.Tensor) -> list[tf.Tensor]:
        grads = per_example_gradients(predictor, variables, x, y, loss_fn)
        return [tf.reduce_sum(c, axis=0) for c in clip_per_example(grads, tf.constant(clip))]

    @tf.function(input_signature=signature)
    def non_private(x: tf.Tensor, y: tf.Tensor) -> None:
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(loss_fn(y, model(x, training=True)))
        apply(tape.gradient(loss, variables))

    @tf.function(input_signature=signature)
    def dp_sgd(x: tf.Tensor, y: tf.Tensor) -> None:  # what the client work runs
        apply(noise(clipped_sum(predictor, variables, x, y, loss_fn, clip), x))

    @tf.function(input_signature=signature)
    def dp_sgd_per_example(x: tf.Tensor, y: tf.Tensor) -> None:
        apply(noise(per_example_sum(x, y), x))

    variants: dict[str, Callable[..., Any]] = {
        "non_private": non_private, "dp_sgd": dp_sgd, "dp_sgd_per_example": dp_sgd_per_example,
    }
    if ghost:
        variants.update(_alternatives(model, variables, predictor, signature, per_example_sum, noise, apply, clip))
    def call(step: Callable[..., Any]) -> Callable[[], Any]:
        return lambda: step(x, y)

    times = _time_interleaved({k: call(f) for k, f in variants.items()}, repeats, inner=20)
    plain = times["non_private"]
    result: dict[str, Any] = {
        "model": name, "batch_size": batch, "params": int(sum(np.prod(v.shape) for v in variables)),
        "dp_path": "ghost_clipping" if ghost else "per_example",
        "non_private_step_ms": plain["wall"] * 1e3,
        "dp_sgd_step_ms": times["dp_sgd"]["wall"] * 1e3,
        "ratio": times["dp_sgd"]["wall"] / plain["wall"],
        "ratio_cpu": times["dp_sgd"]["cpu"] / plain["cpu"],
        "per_example_step_ms": times["dp_sgd_per_example"]["wall"] * 1e3,
        "ratio_per_example": times["dp_sgd_per_example"]["wall"] / plain["wall"],
        "ratio_per_example_cpu": times["dp_sgd_per_example"]["cpu"] / plain["cpu"],
    }
    alternatives = {k: v for k, v in times.items() if k.startswith("alt_")}
    if alternatives:
        result["alternatives"] = {
            k.removeprefix("alt_"): {"step_ms": v["wall"] * 1e3, "ratio": v["wall"] / plain["wall"],
                                     "ratio_cpu": v["cpu"] / plain["cpu"]}
            for k, v in alternatives.items()
        }
    return result


def _alternatives(model: tf.keras.Model, variables: list[tf.Variable], predictor: _Predictor, signature: Any,
                  per_example_sum: Callable[..., Any], noise: Callable[..., Any], apply: Callable[..., Any],
                  clip: float) -> dict[str, Callable[..., Any]]:
    """The other exact ways to get the clipped sum that were measured before choosing."""
    from tensorflow_privacy.privacy.fast_gradient_clipping import clip_grads, layer_registry

    from healthfed_common.dp.client_work import binary_crossentropy_per_example as loss_fn
    from healthfed_common.dp.client_work import clip_per_example

    registry = layer_registry.make_default_layer_registry()

    @tf.function(input_signature=signature)
    @tf.autograph.experimental.do_not_convert
    def two_pass(x: tf.Tensor, y: tf.Tensor) -> None:
        norms = clip_grads.compute_gradient_norms(model, registry, x, y, trainable_vars=variables,
                                                  per_example_loss_fn=lambda t, p, w: loss_fn(t, p))
        weights = tf.stop_gradient(clip_grads.compute_clip_weights(clip, norms))
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(weights * loss_fn(y, model(x, training=True)))
        apply(noise(tape.gradient(loss, variables), x))

    xla_sum = tf.function(per_example_sum, input_signature=signature, jit_compile=True)

    @tf.function(input_signature=signature)
    def per_example_xla(x: tf.Tensor, y: tf.Tensor) -> None:
        apply(noise(xla_sum(x, y), x))

    @tf.function(input_signature=signature)
    def per_example_no_fallback(x: tf.Tensor, y: tf.Tensor) -> None:
        def one(example: tuple[tf.Tensor, tf.Tensor]) -> list[tf.Tensor]:
            xi, yi = example
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(loss_fn(tf.expand_dims(yi, 0), model(tf.expand_dims(xi, 0), training=True)))
            return tape.gradient(loss, variables)

        grads = list(tf.vectorized_map(one, (x, y), fallback_to_while_loop=False))
        apply(noise([tf.reduce_sum(c, axis=0) for c in clip_per_example(grads, tf.constant(clip))], x))

    return {"alt_tfp_two_pass": two_pass, "alt_per_example_xla": per_example_xla,
            "alt_per_example_no_while_fallback": per_example_no_fallback}


def bench_work(repeats: int) -> dict[str, Any]:
    """The silo's real `work` graph, DP vs non-private FedAvg, MLP 13-64-64-1."""
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

    def dp_graphs(clipping: str) -> tuple[GraphComputation, list[np.ndarray]]:
        return graphs(build_dp_fed_avg(model_fn, client_optimizer=sgd, server_optimizer=tff.learning.optimizers.build_sgdm(1.0),
                                       l2_norm_clip=1.0, clipping=clipping))  # type: ignore[arg-type]

    dp_work, dp_input = dp_graphs("auto")
    pe_work, pe_input = dp_graphs("per_example")
    plain_work, plain_input = graphs(tff.learning.algorithms.build_weighted_fed_avg(
        model_fn, client_optimizer_fn=sgd, server_optimizer_fn=tff.learning.optimizers.build_sgdm(1.0)))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, width)).astype(np.float32)
    y = (x[:, :1] + 0.3 * rng.normal(size=(n, 1)) > 0).astype(np.float32)
    schedule = SamplingSchedule(n, batch, epochs)
    dp_data = poisson_dataset_factory(x, y, schedule=schedule, noise_multiplier=1.0)

    def plain_data() -> tf.data.Dataset:
        return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)

    times = _time_interleaved({
        "non_private": lambda: plain_work(plain_input, [plain_data]),
        "dp_sgd": lambda: dp_work(dp_input, [dp_data]),
        "dp_sgd_per_example": lambda: pe_work(pe_input, [dp_data]),
    }, repeats, inner=1)
    plain, dp, pe = times["non_private"], times["dp_sgd"], times["dp_sgd_per_example"]
    steps = schedule.steps_per_round
    return {"model": "mlp_13_64x64", "batch_size": batch, "steps_per_call": steps, "dp_path": "ghost_clipping",
            "non_private_work_s": plain["wall"], "dp_sgd_work_s": dp["wall"], "per_example_work_s": pe["wall"],
            "non_private_step_ms": plain["wall"] / steps * 1e3, "dp_sgd_step_ms": dp["wall"] / steps * 1e3,
            "ratio": dp["wall"] / plain["wall"], "ratio_cpu": dp["cpu"] / plain["cpu"],
            "ratio_per_example": pe["wall"] / plain["wall"], "ratio_per_example_cpu": pe["cpu"] / plain["cpu"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench-results/dpsgd.json"))
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args(argv)
    tf.get_logger().setLevel("ERROR")
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    step_results = []
    for name, spec in _models().items():
        r = bench_step(name, *spec, repeats=args.repeats)
        step_results.append(r)
        print(f"step {r['model']:<24} batch {r['batch_size']:>3}: non-private {r['non_private_step_ms']:.3f} ms, "
              f"DP-SGD ({r['dp_path']}) {r['dp_sgd_step_ms']:.3f} ms, ratio {r['ratio']:.2f}x "
              f"(cpu {r['ratio_cpu']:.2f}x); per-example path {r['ratio_per_example']:.2f}x "
              f"(cpu {r['ratio_per_example_cpu']:.2f}x)", flush=True)
        for alt, a in r.get("alternatives", {}).items():
            print(f"    alternative {alt:<28} ratio {a['ratio']:.2f}x (cpu {a['ratio_cpu']:.2f}x)", flush=True)
    work = bench_work(max(3, args.repeats // 2))
    print(f"work {work['model']}: non-private {work['non_private_work_s']:.3f} s, DP-SGD {work['dp_sgd_work_s']:.3f} s "
          f"({work['steps_per_call']} steps), ratio {work['ratio']:.2f}x (cpu {work['ratio_cpu']:.2f}x); "
          f"per-example path {work['ratio_per_example']:.2f}x (cpu {work['ratio_per_example_cpu']:.2f}x)", flush=True)
    result = {
        "benchmark": "dpsgd_step_time",
        "command": " ".join([".venv/bin/python benchmarks/dpsgd_bench.py", *(argv if argv is not None else sys.argv[1:])]),
        "target": "DP-SGD step time <= 2x non-private (Opacus reports 2.6-8x)",
        "method": "median over repeats of per-call time after 3 warm-up calls; all variants of a configuration "
                  "timed round-robin in the same process on the same batch; `ratio` is wall time, `ratio_cpu` "
                  "this process's CPU time (less sensitive to other jobs on a shared machine). DP = clipped sum "
                  "(ghost clipping for all-Dense models, else per-example gradients by vectorized_map + clip) + "
                  "GaussianSumQuery noise; `*_per_example` = the per-example path forced (the implementation "
                  "before ghost clipping), same noise",
        "step": step_results,
        "work": work,
        "machine": {
            "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "tensorflow": tf.__version__, "devices": [d.device_type for d in tf.config.list_physical_devices()],
            "note": "shared CPU (other jobs running), inter-op and intra-op threads 1",
        },
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
