"""Ghost clipping: the same clipped sum as the per-example reference path, and only for
models it is exact for."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import tensorflow as tf

from healthfed_common.dp.client_work import (
    binary_crossentropy_per_example,
    clip_per_example,
    clipped_sum,
    per_example_gradients,
)
from healthfed_common.dp.ghost_clipping import ghost_clipped_sum, keras_model_of, supports_ghost_clipping

WIDTH = 13
BATCH = 48


def _registry_model(model_id: str, **spec: Any) -> Any:
    """A registry model wrapped as the client work gets it (TFF `from_keras_model`)."""
    import tensorflow_federated as tff

    from healthfed_common.models import model_entry
    from healthfed_common.plan import ModelSpec

    entry = model_entry(model_id)
    shape = (32, 32, 1) if entry.kind == "image" else (WIDTH,)
    keras = entry.build(ModelSpec(id=model_id, **spec), shape, 0)
    spec_x = tf.TensorSpec([None, *shape], tf.float32)
    return tff.learning.models.from_keras_model(
        keras, loss=tf.keras.losses.BinaryCrossentropy(),
        input_spec=(spec_x, tf.TensorSpec([None, 1], tf.float32)),
    )


MODELS = {
    "logistic_regression": lambda: _registry_model("logistic_regression"),
    "mlp_64x64": lambda: _registry_model("mlp", hidden_units=(64, 64)),
    "mlp_default": lambda: _registry_model("mlp"),
}


def _batch(seed: int, n: int = BATCH) -> tuple[tf.Tensor, tf.Tensor]:
    rng = np.random.default_rng(seed)
    # Feature scales spread over two orders of magnitude: per-example gradient norms too.
    scale = np.exp(rng.uniform(np.log(0.05), np.log(20.0), size=(n, 1)))
    x = tf.constant(rng.normal(size=(n, WIDTH)) * scale, tf.float32)
    y = tf.constant(rng.integers(0, 2, size=(n, 1)), tf.float32)
    return x, y


@pytest.mark.parametrize("graph_mode", [False, True], ids=["eager", "tf_function"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_ghost_clipped_sum_equals_per_example_reference(name: str, graph_mode: bool) -> None:
    model = MODELS[name]()
    trainable = list(model.trainable_variables)
    assert supports_ghost_clipping(keras_model_of(model), trainable)
    x, y = _batch(7)
    reference_grads = per_example_gradients(model, trainable, x, y, binary_crossentropy_per_example)
    norms = np.sqrt(sum(np.sum(g.numpy().reshape(BATCH, -1) ** 2, axis=1) for g in reference_grads))
    clip = float(np.median(norms))  # half the examples above the bound, half below
    assert (norms > clip * 1.01).sum() >= BATCH // 3 and (norms < clip * 0.99).sum() >= BATCH // 3
    reference = [tf.reduce_sum(c, axis=0) for c in clip_per_example(reference_grads, tf.constant(clip))]

    def ghost(x: tf.Tensor, y: tf.Tensor) -> list[tf.Tensor]:
        return clipped_sum(model, trainable, x, y, binary_crossentropy_per_example, clip)

    if graph_mode:  # as in the client work: a graph, batch size unknown until run time
        spec = (tf.TensorSpec([None, WIDTH], tf.float32), tf.TensorSpec([None, 1], tf.float32))
        ghost = tf.function(ghost, input_signature=spec)
    fast = ghost(x, y)
    assert [f.shape for f in fast] == [v.shape for v in trainable]
    for f, r in zip(fast, reference):
        np.testing.assert_allclose(f.numpy(), r.numpy(), rtol=1e-5, atol=1e-5)
    # Far from the trivial case: clipping changed the sum.
    unclipped = [tf.reduce_sum(g, axis=0) for g in reference_grads]
    assert max(float(tf.reduce_max(tf.abs(u - r))) for u, r in zip(unclipped, reference)) > 1e-2


def test_forced_per_example_path_and_empty_batch() -> None:
    model = MODELS["mlp_64x64"]()
    trainable = list(model.trainable_variables)
    x, y = _batch(8)
    ghost = clipped_sum(model, trainable, x, y, binary_crossentropy_per_example, 1.0)
    forced = clipped_sum(model, trainable, x, y, binary_crossentropy_per_example, 1.0, clipping="per_example")
    for g, f in zip(ghost, forced):
        np.testing.assert_allclose(g.numpy(), f.numpy(), rtol=1e-5, atol=1e-5)
    # Poisson batches can be empty: a zero sum, not an error or NaN.
    empty = ghost_clipped_sum(keras_model_of(model), trainable, x[:0], y[:0], binary_crossentropy_per_example, 1.0)
    for e, v in zip(empty, trainable):
        assert e.shape == v.shape and not np.any(e.numpy())


class _ScaledDense(tf.keras.layers.Dense):
    """A Dense subclass: its call could do anything, so it is not trusted."""


def _sequential(*layers: tf.keras.layers.Layer, input_shape: tuple[int, ...] = (WIDTH,)) -> tf.keras.Model:
    return tf.keras.Sequential([tf.keras.layers.InputLayer(input_shape=input_shape), *layers])


def _shared_dense_model() -> tf.keras.Model:
    """One Dense layer applied twice: the per-example gradient sums both calls' terms, so
    its norm is not the sum of per-call norms."""
    shared = tf.keras.layers.Dense(WIDTH)
    inputs = tf.keras.Input((WIDTH,))
    return tf.keras.Model(inputs, tf.keras.layers.Dense(1)(shared(shared(inputs))))


@pytest.mark.parametrize(
    "build",
    [
        lambda: keras_model_of(_registry_model("small_cnn", image_size=32)),
        # Batch statistics couple the examples: per-example norms would be wrong.
        lambda: _sequential(tf.keras.layers.Dense(4), tf.keras.layers.BatchNormalization(), tf.keras.layers.Dense(1)),
        lambda: _sequential(_ScaledDense(4), tf.keras.layers.Dense(1)),
        lambda: _sequential(tf.keras.layers.Dense(4), tf.keras.layers.Dense(1), input_shape=(3, WIDTH)),
        lambda: _sequential(tf.keras.layers.Dropout(0.5), tf.keras.layers.Dense(1)),
        _shared_dense_model,
    ],
    ids=["small_cnn", "batch_norm", "dense_subclass", "dense_on_sequences", "dropout", "shared_dense"],
)
def test_models_ghost_clipping_is_not_exact_for_take_the_per_example_path(build: Any) -> None:
    keras = build()
    assert not supports_ghost_clipping(keras, list(keras.trainable_variables))


def test_trainable_must_be_exactly_the_dense_weights() -> None:
    keras = _sequential(tf.keras.layers.Dense(4, activation="relu"), tf.keras.layers.Activation("relu"),
                        tf.keras.layers.Dense(1, activation="sigmoid"))
    weights = list(keras.trainable_variables)
    assert supports_ghost_clipping(keras, weights)
    assert not supports_ghost_clipping(keras, weights[:-1])
    assert not supports_ghost_clipping(None, weights)


def test_work_graph_update_equals_the_per_example_work_graph() -> None:
    """The silo's real `work` (MapReduceForm, run as a serialized graph) for an MLP: ghost
    clipping and the forced per-example path give the same noiseless update."""
    import tensorflow_federated as tff

    from healthfed_common.dp.accounting import SamplingSchedule
    from healthfed_common.dp.process import build_dp_fed_avg
    from healthfed_common.dp.sampling import poisson_dataset_factory
    from healthfed_common.tf_graph import GraphComputation

    def serialized(comp: Any) -> GraphComputation:
        return GraphComputation(tff.framework.serialize_computation(comp))

    def work(clipping: str) -> tuple[GraphComputation, Any]:
        process = build_dp_fed_avg(
            lambda: _registry_model("mlp", hidden_units=(16, 8)),
            client_optimizer=tff.learning.optimizers.build_sgdm(0.5),
            server_optimizer=tff.learning.optimizers.build_sgdm(1.0),
            l2_norm_clip=0.5,
            clipping=clipping,  # type: ignore[arg-type]
        )
        mrf = tff.backends.mapreduce.get_map_reduce_form_for_computation(process.next)
        init = tff.backends.mapreduce.get_state_initialization_computation(process.initialize)
        return serialized(mrf.work), serialized(mrf.prepare)(serialized(init)())

    ghost_work, client_input = work("auto")
    reference_work, reference_input = work("per_example")
    assert ghost_work.fingerprint != reference_work.fingerprint
    x, y = (t.numpy() for t in _batch(9, n=60))
    noiseless = poisson_dataset_factory(x, y, schedule=SamplingSchedule(60, 12, 1), noise_multiplier=0.0,
                                        rng=np.random.default_rng(0))
    ghost, reference = ghost_work(client_input, [noiseless]), reference_work(reference_input, [noiseless])
    assert int(ghost[0]) == int(reference[0]) == 5 and int(ghost[2]) == 0
    assert len(ghost) == len(reference)
    for g, r in zip(ghost, reference):  # five SGD steps of float32 rounding apart
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)
