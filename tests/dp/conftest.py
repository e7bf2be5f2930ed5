"""Shared fixtures for the DP tests: a tiny logistic-regression model and its DP FedAvg
MapReduceForm, executed only through GraphComputation (never TFF's runtime)."""

from __future__ import annotations

from typing import Any

import pytest

WIDTH = 13


def keras_lr_model_fn() -> Any:
    import tensorflow as tf
    import tensorflow_federated as tff

    model = tf.keras.Sequential(
        [
            tf.keras.layers.InputLayer(input_shape=(WIDTH,)),
            tf.keras.layers.Dense(
                1, activation="sigmoid", kernel_initializer=tf.keras.initializers.GlorotUniform(seed=0),
                name="logit",
            ),
        ],
        name="logistic_regression",
    )
    return tff.learning.models.from_keras_model(
        model,
        loss=tf.keras.losses.BinaryCrossentropy(),
        input_spec=(tf.TensorSpec([None, WIDTH], tf.float32), tf.TensorSpec([None, 1], tf.float32)),
    )


@pytest.fixture(scope="session")
def dp_mrf() -> Any:
    """(process, map_reduce_form, initialize computation) of DP FedAvg with clip 1.0."""
    import tensorflow_federated as tff

    from healthfed_common.dp.process import build_dp_fed_avg

    process = build_dp_fed_avg(
        keras_lr_model_fn,
        client_optimizer=tff.learning.optimizers.build_sgdm(0.5),
        server_optimizer=tff.learning.optimizers.build_sgdm(1.0),
        l2_norm_clip=1.0,
    )
    mrf = tff.backends.mapreduce.get_map_reduce_form_for_computation(process.next)
    init = tff.backends.mapreduce.get_state_initialization_computation(process.initialize)
    return process, mrf, init
