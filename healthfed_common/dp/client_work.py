"""DP-SGD client work: what runs inside the MapReduceForm's `work` on every silo.

Contract: the same as TFF's model-delta client work (`ClientResult(update=initial - final
trainable weights, update_weight)`), so it composes with
`tff.learning.templates.compose_learning_process` and a (secure) mean aggregator.

Why the graph does not depend on any silo's dataset size: the noise multiplier sigma and the
expected batch size q*n differ per silo, but the client-work computation must be
byte-identical on every silo (fingerprints are compared). So both reach the graph as data:
each element of the client dataset is
`OrderedDict(x=..., y=..., noise_multiplier=sigma, expected_batch_size=q*n, noise_seed=[2])`
(see `healthfed_common.dp.sampling`, which also does the Poisson sampling the accountant
assumes).

Per step: the sum over the batch of per-example gradients each clipped to global L2 norm C
with the formula of tensorflow-privacy's `GaussianSumQuery.preprocess_record`
(`clipped_sum`), accumulated and noised through that query (N(0, (sigma*C)^2) per
coordinate), and divided by the expected batch size (not the realised one: that would leak
membership). For models of Dense layers the clipped sum comes from ghost clipping (per-example
norms from layer inputs and pre-activation gradients, one backward pass, no per-example
gradient tensors: `healthfed_common.dp.ghost_clipping`); for others from per-example
gradients (`tf.vectorized_map` of a one-example forward and backward pass; see
`per_example_gradients` for why not tensorflow-privacy's jacobian route), clipped batched
(see `clip_per_example` for why not `vectorized_map` of the method itself) and summed. Both
give the same sum (tests check it); the noise is added the same way after either.

Noise entropy: `GaussianSumQuery.get_noised_result` uses an unseeded `tf.random` op, drawn
from TF's process RNG (a fixed function of the graph once anything sets a graph-level seed:
TFF tracing, Keras, a test; otherwise seeded from 64 bits of a non-cryptographic generator).
Ours overrides only the noise source: every step's element carries `noise_seed`, two int64
words = 128 bits the silo drew from the OS CSPRNG (`secrets`) when it built the round's data,
and the noise is `tf.random.stateless_normal` keyed by it (Philox; one seed per gradient
tensor via `stateless_split`). Nothing stateful and no seed constant is in the graph, so the
graph -- and its fingerprint -- is the same on every silo and in every process, while the
noise is unpredictable to anyone without the silo's OS entropy, including the aggregator that
chose every other input of `work`.

`update_weight` is the sum of the expected batch sizes over the round's steps (about
local_epochs * n): example weighting without releasing the realised sample counts, so a
small silo's (larger) noise is down-weighted in the federated mean. A plan's
`algorithm.client_weighting` may take its square root or weigh every silo alike instead
(`healthfed_common.client_weighting`).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping
from typing import Any, Literal, get_args

import dp_accounting
import tensorflow as tf
import tensorflow_federated as tff
from tensorflow_privacy.privacy.dp_query.gaussian_query import GaussianSumQuery

from healthfed_common.client_weighting import client_weight
from healthfed_common.dp import ghost_clipping
from healthfed_common.fedprox import add_proximal_gradient

PerExampleLoss = Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
Clipping = Literal["auto", "per_example"]
CLIPPING_METHODS: tuple[str, ...] = get_args(Clipping)

NOISE_MULTIPLIER_KEY = "noise_multiplier"
EXPECTED_BATCH_SIZE_KEY = "expected_batch_size"
NOISE_SEED_KEY = "noise_seed"
NOISE_SEED_WORDS = 2  # int64 words of OS entropy per step: 128 bits


def binary_crossentropy_per_example(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Per-example loss for the registry's sigmoid-output binary classifiers."""
    loss = tf.keras.losses.BinaryCrossentropy(reduction=tf.keras.losses.Reduction.NONE)
    return loss(y_true, y_pred)


def _x_y_specs(input_spec: Any) -> tuple[Any, Any]:
    if isinstance(input_spec, Mapping):
        return input_spec["x"], input_spec["y"]
    x_spec, y_spec = input_spec
    return x_spec, y_spec


def dp_element_spec(model_input_spec: Any) -> collections.OrderedDict[str, Any]:
    """The element spec of a DP client dataset, given the model's `(x, y)` input spec."""
    x_spec, y_spec = _x_y_specs(model_input_spec)
    return collections.OrderedDict(
        x=x_spec,
        y=y_spec,
        noise_multiplier=tf.TensorSpec([], tf.float32),
        expected_batch_size=tf.TensorSpec([], tf.float32),
        noise_seed=tf.TensorSpec([NOISE_SEED_WORDS], tf.int64),
    )


class DataSeededGaussianSumQuery(GaussianSumQuery):
    """tensorflow-privacy's GaussianSumQuery (clip each record's global L2 norm, sum, add
    N(0, stddev^2)), with the noise keyed by `noise_seed`, a [2] int64 tensor of OS entropy
    that reaches the graph as data; see the module docstring."""

    def __init__(self, l2_norm_clip: Any, stddev: Any, noise_seed: tf.Tensor) -> None:
        super().__init__(l2_norm_clip, stddev)
        self._noise_seed = noise_seed

    def get_noised_result(self, sample_state: Any, global_state: Any) -> tuple[Any, Any, Any]:
        leaves = tf.nest.flatten(sample_state)
        seed = tf.ensure_shape(tf.cast(self._noise_seed, tf.int64), [NOISE_SEED_WORDS])
        seeds = tf.random.experimental.stateless_split(seed, num=len(leaves))
        noised = [
            leaf
            + tf.random.stateless_normal(
                tf.shape(leaf), seed=seeds[index], stddev=tf.cast(global_state.stddev, leaf.dtype),
                dtype=leaf.dtype,
            )
            for index, leaf in enumerate(leaves)
        ]
        event = dp_accounting.GaussianDpEvent(global_state.stddev / global_state.l2_norm_clip)
        return tf.nest.pack_sequence_as(sample_state, noised), global_state, event


def dp_sgd_gradient(
    per_example_grads: list[tf.Tensor],
    *,
    l2_norm_clip: float | tf.Tensor,
    noise_multiplier: tf.Tensor,
    expected_batch_size: tf.Tensor,
    noise_seed: tf.Tensor,
) -> list[tf.Tensor]:
    """(sum_i clip(g_i) + N(0, (sigma*C)^2 I)) / expected_batch_size, over the leading axis;
    the noise keyed by `noise_seed` ([2] int64 of OS entropy, e.g. `sampling.noise_seeds`).

    The per-example path end to end, for tests and the benchmark: the client work runs
    `clipped_sum` (this clipping and sum, or ghost clipping) and then this `noised_mean`."""
    clipped = clip_per_example(per_example_grads, tf.cast(l2_norm_clip, tf.float32))
    return noised_mean(
        [tf.reduce_sum(c, axis=0) for c in clipped],
        l2_norm_clip=l2_norm_clip,
        noise_multiplier=noise_multiplier,
        expected_batch_size=expected_batch_size,
        noise_seed=noise_seed,
    )


def noised_mean(
    clipped_sum: list[tf.Tensor],
    *,
    l2_norm_clip: float | tf.Tensor,
    noise_multiplier: tf.Tensor,
    expected_batch_size: tf.Tensor,
    noise_seed: tf.Tensor,
) -> list[tf.Tensor]:
    """(clipped_sum + N(0, (sigma*C)^2 I)) / expected_batch_size: the accumulate and noise
    half of the GaussianSumQuery, given the sum of the preprocessed (clipped) records. The
    noise is a stateless function of `noise_seed` ([2] int64, 128 bits of OS entropy): the
    same seed gives the same noise, so the caller draws a fresh one per step."""
    clip = tf.cast(l2_norm_clip, tf.float32)
    query = DataSeededGaussianSumQuery(clip, tf.cast(noise_multiplier, tf.float32) * clip, noise_seed)
    global_state = query.initial_global_state()
    template = [tf.TensorSpec(s.shape, s.dtype) for s in clipped_sum]
    sample_state = query.initial_sample_state(template)
    sample_state = query.accumulate_preprocessed_record(sample_state, clipped_sum)
    noised, _, _ = query.get_noised_result(sample_state, global_state)
    denominator = tf.maximum(tf.cast(expected_batch_size, tf.float32), 1e-12)
    return [tf.cast(n, tf.float32) / denominator for n in noised]


def clip_per_example(per_example_grads: list[tf.Tensor], l2_norm_clip: tf.Tensor) -> list[tf.Tensor]:
    """Each example's gradient (a slice along axis 0 across all tensors) scaled to global L2
    norm <= C: the formula of `GaussianSumQuery.preprocess_record` (`tf.clip_by_global_norm`:
    g * C / max(||g||, C)), batched. Running that method under `tf.vectorized_map` instead
    falls back to a while loop (pfor has no converter for L2Loss); tests check both agree."""
    squared = [
        tf.reduce_sum(tf.reshape(tf.square(g), [tf.shape(g)[0], -1]), axis=1)
        for g in per_example_grads
    ]
    norms = tf.sqrt(tf.add_n(squared))
    clip = tf.cast(l2_norm_clip, norms.dtype)
    scale = clip / tf.maximum(norms, clip)
    return [
        g * tf.reshape(tf.cast(scale, g.dtype), [-1] + [1] * (len(g.shape) - 1))
        for g in per_example_grads
    ]


def clipped_sum(
    model: Any,
    trainable: list[tf.Variable],
    x: Any,
    y: Any,
    per_example_loss: PerExampleLoss,
    l2_norm_clip: float | tf.Tensor,
    *,
    clipping: Clipping = "auto",
) -> list[tf.Tensor]:
    """sum_i g_i * C / max(||g_i||, C) over the batch, one tensor per `trainable` variable:
    the sum of the records `GaussianSumQuery.preprocess_record` would clip.

    "auto": ghost clipping (`ghost_clipping.ghost_clipped_sum`: gradient norms from the
    Dense layers' inputs and pre-activation gradients, no per-example gradient tensors) when
    the model is one it is exact for, otherwise -- or with "per_example" -- the reference
    path: `per_example_gradients`, `clip_per_example`, sum. The choice depends only on the
    model's structure, so it is the same on every silo."""
    keras_model = ghost_clipping.keras_model_of(model)
    if clipping == "auto" and ghost_clipping.supports_ghost_clipping(keras_model, trainable):
        summed: list[Any] = ghost_clipping.ghost_clipped_sum(keras_model, trainable, x, y, per_example_loss, l2_norm_clip)
        return summed
    grads = per_example_gradients(model, trainable, x, y, per_example_loss)
    clipped = clip_per_example(grads, tf.cast(l2_norm_clip, tf.float32))
    return [tf.reduce_sum(c, axis=0) for c in clipped]


def per_example_gradients(
    model: Any, trainable: list[tf.Variable], x: Any, y: Any, per_example_loss: PerExampleLoss
) -> list[tf.Tensor]:
    """Per-example gradients of `per_example_loss` w.r.t. `trainable` (leading batch axis).

    `tf.vectorized_map` of a one-example forward+backward pass: pfor turns it into batched
    kernels (a Dense kernel's gradient becomes a batched outer product), O(batch) work.
    (`tape.jacobian` of the per-example losses -- tensorflow-privacy's vectorised optimizer
    route -- vectorises one backward pass of the WHOLE batch per example, O(batch^2): 8x
    slower than non-private steps on a 64-unit MLP here, against ~2x for this.)"""

    # TFF's Keras VariableModel wraps predict_on_batch in tf.function. Under pfor that
    # nested function is re-traced with automatic control dependencies whose order comes
    # from a Python set -- the serialized graph (and so the fingerprint every silo must
    # match) would then differ from process to process. The plain Python function inlines.
    predict = getattr(model.predict_on_batch, "python_function", model.predict_on_batch)

    def one_example(example: tuple[Any, Any]) -> list[tf.Tensor]:
        xi, yi = example
        with tf.GradientTape() as tape:
            prediction = predict(tf.expand_dims(xi, 0), training=True)
            loss = tf.reduce_sum(per_example_loss(tf.expand_dims(yi, 0), prediction))
        grads = tape.gradient(loss, trainable, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return list(grads)

    return list(tf.vectorized_map(one_example, (x, y), fallback_to_while_loop=True))


def dp_sgd_step_gradient(
    model: Any,
    trainable: list[tf.Variable],
    global_weights: list[Any],
    batch: Mapping[str, Any],
    *,
    per_example_loss: PerExampleLoss,
    l2_norm_clip: float,
    clipping: Clipping = "auto",
    proximal_strength: float | None = None,
) -> list[tf.Tensor]:
    """One DP-SGD step's gradient: (clipped sum over the batch + noise) / expected batch
    size, then the FedProx proximal gradient mu * (w - w_global) when `proximal_strength` is
    set (`healthfed_common.fedprox.add_proximal_gradient`).

    The proximal gradient comes AFTER per-example clipping and noise: it is a function of the
    current iterate and the round's global model only -- no record enters it -- so by
    post-processing it costs no privacy, and neither the clipping bound (the sensitivity) nor
    the noise changes with mu. (Inside the per-example clipping it would be clipped with each
    record's gradient and scaled by the realised batch size, weakening the pull for no privacy
    gain.)"""
    summed = clipped_sum(
        model, trainable, batch["x"], batch["y"], per_example_loss, l2_norm_clip, clipping=clipping
    )
    noised = noised_mean(
        summed,
        l2_norm_clip=l2_norm_clip,
        noise_multiplier=batch[NOISE_MULTIPLIER_KEY],
        expected_batch_size=batch[EXPECTED_BATCH_SIZE_KEY],
        noise_seed=batch[NOISE_SEED_KEY],
    )
    return add_proximal_gradient(noised, trainable, global_weights, proximal_strength)


def _build_client_update(
    model_fn: Callable[[], Any],
    l2_norm_clip: float,
    per_example_loss: PerExampleLoss,
    clipping: Clipping,
    proximal_strength: float | None = None,
    client_weighting: str = "examples",
) -> Callable[..., Any]:
    model = model_fn()

    @tf.function
    def client_update(optimizer: Any, initial_weights: Any, data: tf.data.Dataset, hparams: Any) -> Any:
        weights = tff.learning.models.ModelWeights.from_model(model)
        tf.nest.map_structure(lambda v, t: v.assign(t), weights, initial_weights)
        trainable = list(tf.nest.flatten(weights.trainable))
        specs = tuple(tf.TensorSpec(v.shape, v.dtype) for v in trainable)
        global_weights = list(tf.nest.flatten(initial_weights.trainable))

        def reduce_fn(state: Any, batch: Mapping[str, Any]) -> Any:
            steps, expected_examples, optimizer_state = state
            noised = dp_sgd_step_gradient(
                model, trainable, global_weights, batch, per_example_loss=per_example_loss,
                l2_norm_clip=l2_norm_clip, clipping=clipping, proximal_strength=proximal_strength,
            )
            optimizer_state, updated = optimizer.next(
                optimizer_state, tuple(trainable), tuple(noised)
            )
            for variable, value in zip(trainable, updated):
                variable.assign(value)
            return (
                steps + 1,
                expected_examples + tf.cast(batch[EXPECTED_BATCH_SIZE_KEY], tf.float32),
                optimizer_state,
            )

        optimizer_state = optimizer.set_hparams(optimizer.initialize(specs), hparams)
        initial = (tf.constant(0, tf.int32), tf.constant(0.0, tf.float32), optimizer_state)
        steps, expected_examples, _ = data.reduce(initial, reduce_fn)
        delta = tf.nest.map_structure(tf.subtract, initial_weights.trainable, weights.trainable)
        delta, non_finite = _zero_all_if_any_non_finite(delta)
        weight = tf.where(non_finite > 0, tf.constant(0.0), client_weight(expected_examples, client_weighting))
        stats = collections.OrderedDict(
            dp_steps=steps,
            expected_examples=expected_examples,
            non_finite_updates=non_finite,
        )
        return tff.learning.templates.ClientResult(update=delta, update_weight=weight), stats

    traced: Callable[..., Any] = client_update  # a tff.tf_computation (untyped)
    return traced


def _zero_all_if_any_non_finite(structure: Any) -> tuple[Any, tf.Tensor]:
    """Zeros every tensor when any is NaN/inf (as TFF's model-delta work does), so a
    diverged silo contributes nothing; returns (structure, 1 if zeroed else 0)."""
    flat = tf.nest.flatten(structure)
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in flat])
    zeroed = [tf.where(finite, t, tf.zeros_like(t)) for t in flat]
    return tf.nest.pack_sequence_as(structure, zeroed), tf.cast(tf.logical_not(finite), tf.int32)


def build_dp_sgd_client_work(
    model_fn: Callable[[], Any],
    optimizer: Any,
    *,
    l2_norm_clip: float,
    per_example_loss: PerExampleLoss = binary_crossentropy_per_example,
    clipping: Clipping = "auto",
    proximal_strength: float | None = None,
    client_weighting: str = "examples",
) -> Any:
    """A `tff.learning.templates.ClientWorkProcess` doing record-level DP-SGD (FedProx's
    DP-SGD with `proximal_strength` mu: see `add_proximal_gradient`).

    `model_fn` returns a `tff.learning.models.VariableModel` (e.g. from
    `tff.learning.models.from_keras_model`) whose `input_spec` is `(x, y)` or
    `OrderedDict(x=, y=)`; the client data is a sequence of `dp_element_spec(input_spec)`.
    `optimizer` is a `tff.learning.optimizers.Optimizer`; its hyper-parameters are the
    process state, as in TFF's model-delta client work. `l2_norm_clip` is fixed in the graph
    (it is a plan field, the same on every silo). `clipping`: see `clipped_sum` ("auto", or
    "per_example" to force the reference path, e.g. to benchmark it).

    Measurements (summed over silos, plain sums -- only public, size-derived counts, so they
    are safe to release without noise): dp_steps, expected_examples, non_finite_updates."""
    if l2_norm_clip <= 0:
        raise ValueError("l2_norm_clip must be > 0")
    if proximal_strength is not None and proximal_strength < 0:
        raise ValueError("proximal_strength must be >= 0")
    if clipping not in CLIPPING_METHODS:
        raise ValueError(f"clipping must be one of {CLIPPING_METHODS}, got {clipping!r}")
    with tf.Graph().as_default():
        model = model_fn()
        element_spec = dp_element_spec(model.input_spec)
    element_type = tff.types.tensorflow_to_type(element_spec)
    data_type = tff.SequenceType(element_type)
    weights_type = tff.learning.models.weights_type_from_model(model)

    whimsy_state = optimizer.initialize(tf.TensorSpec([], tf.float32))
    initial_hparams = optimizer.get_hparams(whimsy_state)

    @tff.federated_computation
    def init_fn() -> Any:
        return tff.federated_value(initial_hparams, tff.SERVER)

    state_type = init_fn.type_signature.result.member

    @tff.tensorflow.computation(state_type)
    def get_hparams_fn(state: Any) -> Any:
        return state

    @tff.tensorflow.computation(state_type, state_type)
    def set_hparams_fn(state: Any, hparams: Any) -> Any:
        del state
        return hparams

    @tff.tensorflow.computation(state_type, weights_type, data_type)
    def client_update_computation(hparams: Any, initial_weights: Any, dataset: Any) -> Any:
        update = _build_client_update(model_fn, l2_norm_clip, per_example_loss, clipping, proximal_strength,
                                      client_weighting)
        return update(optimizer, initial_weights, dataset, hparams)

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(weights_type, tff.CLIENTS),
        tff.FederatedType(data_type, tff.CLIENTS),
    )
    def next_fn(state: Any, weights: Any, client_data: Any) -> Any:
        state_at_clients = tff.federated_broadcast(state)
        client_result, stats = tff.federated_map(
            client_update_computation, (state_at_clients, weights, client_data)
        )
        measurements = tff.federated_zip(
            collections.OrderedDict(train=tff.federated_sum(stats))
        )
        return tff.templates.MeasuredProcessOutput(state, client_result, measurements)

    return tff.learning.templates.ClientWorkProcess(
        init_fn, next_fn, get_hparams_fn=get_hparams_fn, set_hparams_fn=set_hparams_fn
    )
