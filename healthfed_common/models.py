"""The closed model registry: a plan names a model by id, never by class path.

Each builder returns an uncompiled Keras 2 model with explicitly seeded initializers, so the
TFF computation traced from it is byte-identical on every machine (an unseeded initializer
would give each silo a different graph and a fingerprint mismatch).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import tensorflow as tf

from healthfed_common.errors import UnknownModel
from healthfed_common.plan import ModelSpec


@dataclass(frozen=True)
class ModelEntry:
    id: str
    kind: str  # "tabular" or "image"
    description: str
    build: Callable[[ModelSpec, tuple[int, ...], int], tf.keras.Model]


def _glorot(seed: int) -> tf.keras.initializers.Initializer:
    return tf.keras.initializers.GlorotUniform(seed=seed)


def _logistic_regression(spec: ModelSpec, input_shape: tuple[int, ...], seed: int) -> tf.keras.Model:
    return tf.keras.Sequential(
        [
            tf.keras.layers.InputLayer(input_shape=input_shape),
            tf.keras.layers.Dense(
                1, activation="sigmoid", name="logit",
                kernel_initializer="zeros" if spec.kernel_initializer == "zeros" else _glorot(seed),
            ),
        ],
        name="logistic_regression",
    )


def _mlp(spec: ModelSpec, input_shape: tuple[int, ...], seed: int) -> tf.keras.Model:
    layers: list[tf.keras.layers.Layer] = [tf.keras.layers.InputLayer(input_shape=input_shape)]
    for index, units in enumerate(spec.hidden_units or (16,)):
        layers.append(
            tf.keras.layers.Dense(
                units, activation="relu", kernel_initializer=_glorot(seed + index), name=f"hidden_{index}"
            )
        )
    layers.append(
        tf.keras.layers.Dense(1, activation="sigmoid", kernel_initializer=_glorot(seed + 997), name="logit")
    )
    return tf.keras.Sequential(layers, name="mlp")


def _small_cnn(spec: ModelSpec, input_shape: tuple[int, ...], seed: int) -> tf.keras.Model:
    return tf.keras.Sequential(
        [
            tf.keras.layers.InputLayer(input_shape=input_shape),
            tf.keras.layers.Conv2D(8, 3, activation="relu", kernel_initializer=_glorot(seed), name="conv_0"),
            tf.keras.layers.MaxPooling2D(2),
            tf.keras.layers.Conv2D(16, 3, activation="relu", kernel_initializer=_glorot(seed + 1), name="conv_1"),
            tf.keras.layers.GlobalAveragePooling2D(),
            tf.keras.layers.Dense(1, activation="sigmoid", kernel_initializer=_glorot(seed + 2), name="logit"),
        ],
        name="small_cnn",
    )


MODEL_REGISTRY: dict[str, ModelEntry] = {
    entry.id: entry
    for entry in (
        ModelEntry("logistic_regression", "tabular", "Logistic regression (one sigmoid unit).", _logistic_regression),
        ModelEntry("mlp", "tabular", "Multi-layer perceptron, ReLU hidden layers (default 16 units).", _mlp),
        ModelEntry("small_cnn", "image", "Two-layer CNN for single-channel images.", _small_cnn),
    )
}


def model_entry(model_id: str) -> ModelEntry:
    try:
        return MODEL_REGISTRY[model_id]
    except KeyError:
        known = ", ".join(sorted(MODEL_REGISTRY))
        raise UnknownModel(f"model id {model_id!r} is not in this build's registry ({known})") from None
