"""FedProx (Li et al. 2020): each silo minimises its loss plus mu/2 * ||w - w_global||^2.

Why our own client work and not `tff.learning.algorithms.build_weighted_fed_prox`: in TFF
0.87 its proximal term is `mu * (w_global - w)` added to the gradient (proximal_client_work:
`lambda x, y: delta_l2_regularizer * (y - x)` over (current, initial) weights), the NEGATIVE
of the proximal gradient, so each local step pushes the model AWAY from the global one and the
update grows with mu (measured here: with SGD at learning rate 0.5 over 24 steps, the update's
first coordinate is -472 at mu = 0, -921 at mu = 0.1, -2.8e4 at mu = 0.5 and -4.1e7 at
mu = 1.5). `tests/core/test_algorithms.py` checks the direction of ours.

The client work here is TFF's model-delta work (forward pass, gradient, the plan's client
optimizer, delta = initial - final trainable weights, zeroed when not finite, weighted by
examples, metrics summed then finalized) with `add_proximal_gradient` applied to each step's
gradient. The DP-SGD client work (`healthfed_common.dp.client_work`) applies the same function
after clipping and noise.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Mapping
from typing import Any

from healthfed_common.client_weighting import client_weight


def add_proximal_gradient(gradient: list[Any], trainable: list[Any], global_weights: list[Any],
                          proximal_strength: float | None) -> list[Any]:
    """gradient + mu * (w - w_global): the gradient of mu/2 * ||w - w_global||^2 added to a
    step's gradient, so a descent step pulls w towards the round's global model. It is a
    function of the current iterate and the global model only -- no record enters it.
    `proximal_strength` None (FedAvg) leaves the graph without the term."""
    import tensorflow as tf

    if proximal_strength is None:
        return list(gradient)
    mu = tf.constant(proximal_strength, tf.float32)
    return [g + mu * (tf.cast(w, g.dtype) - tf.cast(w0, g.dtype)) for g, w, w0 in zip(gradient, trainable, global_weights)]


def _zero_all_if_any_non_finite(structure: Any) -> tuple[Any, Any]:
    import tensorflow as tf

    flat = tf.nest.flatten(structure)
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(t)) for t in flat])
    zeroed = [tf.where(finite, t, tf.zeros_like(t)) for t in flat]
    return tf.nest.pack_sequence_as(structure, zeroed), tf.logical_not(finite)


def _build_client_update(model_fn: Callable[[], Any], proximal_strength: float | None,
                         client_weighting: str = "examples") -> Callable[..., Any]:
    import tensorflow as tf
    import tensorflow_federated as tff

    model = model_fn()

    def client_update(optimizer: Any, initial_weights: Any, data: Any) -> Any:
        weights = tff.learning.models.ModelWeights.from_model(model)
        tf.nest.map_structure(lambda v, t: v.assign(t), weights, initial_weights)
        trainable = list(tf.nest.flatten(weights.trainable))
        global_weights = list(tf.nest.flatten(initial_weights.trainable))
        specs = tuple(tf.TensorSpec(v.shape, v.dtype) for v in trainable)

        def reduce_fn(state: Any, batch: Mapping[str, Any]) -> Any:
            examples, optimizer_state = state
            with tf.GradientTape() as tape:
                output = model.forward_pass(batch, training=True)
            gradient = tape.gradient(output.loss, trainable)
            gradient = add_proximal_gradient(gradient, trainable, global_weights, proximal_strength)
            optimizer_state, updated = optimizer.next(optimizer_state, tuple(trainable), tuple(gradient))
            for variable, value in zip(trainable, updated):
                variable.assign(value)
            if output.num_examples is None:
                examples += tf.shape(output.predictions, out_type=tf.int64)[0]
            else:
                examples += tf.cast(output.num_examples, tf.int64)
            return examples, optimizer_state

        initial = (tf.zeros([], tf.int64), optimizer.initialize(specs))
        examples, _ = data.reduce(initial, reduce_fn)
        delta = tf.nest.map_structure(tf.subtract, initial_weights.trainable, weights.trainable)
        delta, non_finite = _zero_all_if_any_non_finite(delta)
        weight = tf.where(non_finite, tf.constant(0.0), client_weight(examples, client_weighting))
        return (tff.learning.templates.ClientResult(update=delta, update_weight=weight),
                model.report_local_unfinalized_metrics())

    traced: Callable[..., Any] = tf.function(client_update)
    return traced


def build_proximal_client_work(model_fn: Callable[[], Any], optimizer: Any, proximal_strength: float | None,
                               client_weighting: str = "examples") -> Any:
    """A `tff.learning.templates.ClientWorkProcess`: model-delta client work whose every local
    step adds the proximal gradient (see the module docstring); its update weight is
    `client_weighting` of the examples processed (`healthfed_common.client_weighting`)."""
    import tensorflow as tf
    import tensorflow_federated as tff

    if proximal_strength is not None and proximal_strength < 0:
        raise ValueError("proximal_strength must be >= 0")
    with tf.Graph().as_default():
        model = model_fn()
        metrics_aggregation = tff.learning.metrics.sum_then_finalize(model.metric_finalizers())
    data_type = tff.SequenceType(tff.types.tensorflow_to_type(model.input_spec))
    weights_type = tff.learning.models.weights_type_from_model(model)

    @tff.tensorflow.computation(weights_type, data_type)
    def client_update_computation(initial_weights: Any, dataset: Any) -> Any:
        return _build_client_update(model_fn, proximal_strength, client_weighting)(optimizer, initial_weights, dataset)

    @tff.federated_computation
    def init_fn() -> Any:
        return tff.federated_value((), tff.SERVER)

    @tff.federated_computation(
        init_fn.type_signature.result,
        tff.FederatedType(weights_type, tff.CLIENTS),
        tff.FederatedType(data_type, tff.CLIENTS),
    )
    def next_fn(state: Any, weights: Any, client_data: Any) -> Any:
        client_result, model_outputs = tff.federated_map(client_update_computation, (weights, client_data))
        measurements = tff.federated_zip(collections.OrderedDict(train=metrics_aggregation(model_outputs)))
        return tff.templates.MeasuredProcessOutput(state, client_result, measurements)

    return tff.learning.templates.ClientWorkProcess(init_fn, next_fn)


def build_weighted_fed_prox(model_fn: Callable[[], Any], *, proximal_strength: float | None, client_optimizer: Any,
                            server_optimizer: Any, model_aggregator: Any | None = None,
                            client_weighting: str = "examples") -> Any:
    """`compose_learning_process(initial weights, broadcast, proximal client work, weighted
    mean, server optimizer)`: example-weighted FedProx, the same shape as TFF's FedAvg process
    (so the MapReduceForm split, the secure sum and the aggregator's round are unchanged)."""
    import tensorflow_federated as tff

    client_work = build_proximal_client_work(model_fn, client_optimizer, proximal_strength, client_weighting)
    weights_type = client_work.next.type_signature.parameter[1].member

    @tff.tensorflow.computation
    def initial_model_weights() -> Any:
        return tff.learning.models.ModelWeights.from_model(model_fn())

    distributor = tff.learning.templates.build_broadcast_process(weights_type)
    factory = model_aggregator if model_aggregator is not None else tff.aggregators.MeanFactory()
    weight_dtype = client_work.next.type_signature.result.result.member.update_weight.dtype
    aggregator = factory.create(weights_type.trainable, tff.TensorType(weight_dtype))
    finalizer = tff.learning.templates.build_apply_optimizer_finalizer(server_optimizer, weights_type)
    return tff.learning.templates.compose_learning_process(
        initial_model_weights, distributor, client_work, aggregator, finalizer
    )
