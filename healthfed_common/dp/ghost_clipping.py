"""The sum of per-example clipped gradients of an all-Dense Keras model, without ever
materialising a per-example gradient ("ghost clipping", book-keeping variant).

For a Dense layer z = a W + b, example i's gradient is (a_i delta_i^T, delta_i), where
delta_i = dL_i/dz_i: the row i of the gradient of the SUMMED loss w.r.t. the layer's
pre-activation Z (examples do not interact in the models this accepts). So

- its squared norm is ||a_i||^2 ||delta_i||^2 + ||delta_i||^2 (Goodfellow 2015; computed by
  tensorflow-privacy's Dense registry function, which also provides the forward pass that
  exposes Z), summed over layers;
- with w_i = C / max(||g_i||, C) (the factor of `GaussianSumQuery.preprocess_record` /
  `tf.clip_by_global_norm`), the clipped sum is sum_i w_i g_i = (A^T (w * Delta),
  sum_i w_i delta_i): one matmul per layer, the same as the non-private weight gradient.

One forward pass, one backward pass to the pre-activations, O(batch * width) for the norms:
no second backward pass of the reweighted loss (what tensorflow-privacy's
`compute_clipped_gradients_and_outputs` does), no per-example tensors of the kernels' size.
The result is the same sum that clipping each per-example gradient and adding would give
(tests check it against `per_example_gradients` + `clip_per_example`).

Exactness needs every example's loss to depend on that example's row only, so
`supports_ghost_clipping` accepts only models built of Dense layers (on batches of vectors)
and weightless per-example layers; anything else takes the per-example path.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf
from tensorflow_privacy.privacy.fast_gradient_clipping import gradient_clipping_utils
from tensorflow_privacy.privacy.fast_gradient_clipping.registry_functions.dense import (
    dense_layer_computation,
)

# Weightless layers that act on each example alone (a batch-statistics layer would not).
_PER_EXAMPLE_LAYERS = (tf.keras.layers.InputLayer, tf.keras.layers.Activation, tf.keras.layers.Flatten)


def keras_model_of(model: Any) -> tf.keras.Model | None:
    """The Keras model behind a TFF `from_keras_model` VariableModel (or `model` itself)."""
    if isinstance(model, tf.keras.Model):
        return model
    inner = getattr(model, "_keras_model", None)
    return inner if isinstance(inner, tf.keras.Model) else None


def supports_ghost_clipping(keras_model: tf.keras.Model | None, trainable: list[tf.Variable]) -> bool:
    """Whether `ghost_clipped_sum` is exact for this model: a Keras graph model whose
    layers are Dense layers on vectors (exactly `tf.keras.layers.Dense`, no subclass), each
    called once (a shared layer's per-example gradient is a sum of its calls'), or
    weightless per-example layers, and whose Dense weights are exactly `trainable`."""
    if keras_model is None or not gradient_clipping_utils.has_internal_compute_graph(keras_model):
        return False
    if not keras_model.inputs:
        return False
    dense_weights: list[tf.Variable] = []
    for layer in keras_model.layers:
        if type(layer) is tf.keras.layers.Dense:
            if len(layer.inbound_nodes) != 1 or len(layer.input_shape) != 2:
                return False
            dense_weights.extend(layer.trainable_weights)
        elif not isinstance(layer, _PER_EXAMPLE_LAYERS) or layer.weights:
            return False
    return {v.ref() for v in dense_weights} == {v.ref() for v in trainable} and len(dense_weights) == len(
        trainable
    )


@tf.autograph.experimental.do_not_convert  # no data-dependent control flow; keeps the graph plain
def ghost_clipped_sum(
    keras_model: tf.keras.Model,
    trainable: list[tf.Variable],
    x: tf.Tensor,
    y: tf.Tensor,
    per_example_loss: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
    l2_norm_clip: float | tf.Tensor,
) -> list[tf.Tensor]:
    """sum_i g_i * C / max(||g_i||, C) for each of `trainable` (in that order), where g_i is
    example i's gradient of `per_example_loss` (global L2 norm over all of `trainable`).

    Requires `supports_ghost_clipping(keras_model, trainable)`."""
    tape = tf.GradientTape(watch_accessed_variables=False)

    def generator_fn(layer: tf.keras.layers.Layer, args: Any, kwargs: Any) -> tuple[Any, Any]:
        if type(layer) is tf.keras.layers.Dense and layer.trainable_weights:
            pre_activation, outputs, sqr_norm_fn = dense_layer_computation(layer, args, kwargs, tape)
            return outputs, (layer, args[0], pre_activation, sqr_norm_fn)
        return layer(*args, **kwargs), None

    with tape:
        predictions, records = gradient_clipping_utils.model_forward_pass(keras_model, x, generator_fn)
        summed_loss = tf.reduce_sum(per_example_loss(y, predictions))
    dense = [record for record in records if record is not None]
    deltas = tape.gradient(
        summed_loss, [record[2] for record in dense], unconnected_gradients=tf.UnconnectedGradients.ZERO
    )
    squared_norms = tf.add_n([record[3](delta) for record, delta in zip(dense, deltas)])
    clip = tf.cast(l2_norm_clip, squared_norms.dtype)
    scale = clip / tf.maximum(tf.sqrt(squared_norms), clip)

    by_variable: dict[Any, tf.Tensor] = {}
    for (layer, inputs, _, _), delta in zip(dense, deltas):
        weighted = delta * tf.expand_dims(tf.cast(scale, delta.dtype), 1)
        by_variable[layer.kernel.ref()] = tf.matmul(tf.cast(inputs, delta.dtype), weighted, transpose_a=True)
        if layer.use_bias:
            by_variable[layer.bias.ref()] = tf.reduce_sum(weighted, axis=0)
    return [by_variable[v.ref()] for v in trainable]
