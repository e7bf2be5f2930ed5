"""A FedAvg learning process whose client work is DP-SGD, composed from TFF's templates.

The lead's `healthfed_common.learning_process` owns the production process (with the secure
sum); this composer is the same shape and is what the DP tests, the benchmark and the
Fed-Heart-Disease prototype use to get a MapReduceForm, and what `learning_process` can call
with its own `model_aggregator` (e.g. `MeanFactory(SecureSumFactory...)`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow_federated as tff

from healthfed_common.dp.client_work import (
    Clipping,
    PerExampleLoss,
    binary_crossentropy_per_example,
    build_dp_sgd_client_work,
)


def build_dp_fed_avg(
    model_fn: Callable[[], Any],
    *,
    client_optimizer: Any,
    server_optimizer: Any,
    l2_norm_clip: float,
    model_aggregator: Any | None = None,
    per_example_loss: PerExampleLoss = binary_crossentropy_per_example,
    clipping: Clipping = "auto",
    proximal_strength: float | None = None,
    client_weighting: str = "examples",
) -> Any:
    """`compose_learning_process(initial weights, broadcast, DP-SGD client work, weighted
    mean, server optimizer)`. `model_aggregator` must be a weighted aggregation factory
    (default `tff.aggregators.MeanFactory()`). `clipping`: see `client_work.clipped_sum`.
    `proximal_strength`: FedProx's mu (None: FedAvg), see `client_work.add_proximal_gradient`.
    `client_weighting`: each silo's update weight (`healthfed_common.client_weighting`)."""
    client_work = build_dp_sgd_client_work(
        model_fn, client_optimizer, l2_norm_clip=l2_norm_clip, per_example_loss=per_example_loss,
        clipping=clipping, proximal_strength=proximal_strength, client_weighting=client_weighting,
    )
    weights_type = client_work.next.type_signature.parameter[1].member
    model_weights_fn = _initial_weights_computation(model_fn)
    distributor = tff.learning.templates.build_broadcast_process(weights_type)
    factory = model_aggregator if model_aggregator is not None else tff.aggregators.MeanFactory()
    aggregator = factory.create(
        weights_type.trainable, tff.TensorType(client_work.next.type_signature.result.result.member.update_weight.dtype)
    )
    finalizer = tff.learning.templates.build_apply_optimizer_finalizer(server_optimizer, weights_type)
    return tff.learning.templates.compose_learning_process(
        model_weights_fn, distributor, client_work, aggregator, finalizer
    )


def _initial_weights_computation(model_fn: Callable[[], Any]) -> Any:
    @tff.tensorflow.computation
    def initial_model_weights() -> Any:
        return tff.learning.models.ModelWeights.from_model(model_fn())

    return initial_model_weights
