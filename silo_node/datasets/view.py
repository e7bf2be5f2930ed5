"""The training view: the only thing training code receives from a dataset.

It is built from the minimised stored copy, restricted to the plan's features after
`check_plan` has accepted them, and materialised as plain float32 arrays: training code gets
numbers, never a frame it could ask for more columns.

Two kinds of preprocessing. Non-DP plans standardise with the train subset's mean and sample
std and impute missing numbers with the train mean, unless the plan asks for
`preprocessing: public_bounds` (then they are transformed exactly as under DP: every hospital
scales alike, which a shared model needs). DP plans may use NO statistic of the
private records -- one record would otherwise move every record's features and the DP-SGD
sensitivity would no longer be the clipping bound -- so a `standardize` feature is clamped to
the policy's PUBLIC `bounds` and scaled to [-1, 1], a missing number becomes the policy's
public `impute` value, and anything needing a private statistic is refused
(`policy.check_private_preprocessing`, NON_PRIVATE_PREPROCESSING).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TYPE_CHECKING

import numpy as np
from numpy.typing import NDArray
import pandas as pd

from healthfed_common.plan import FeatureSpec, Plan
from silo_node.datasets.errors import NonPrivatePreprocessing
from silo_node.datasets.minimisation import SPLIT_COLUMN, canonical_text
from silo_node.datasets.policy import DatasetPolicy, FeaturePolicy, check_private_preprocessing

if TYPE_CHECKING:
    import tensorflow as tf


@dataclass(frozen=True)
class TrainingView:
    """`features`: float32 [n, plan.input_width] for tabular models, or float32
    [n, s, s, 1] images in [0, 1] for image models. `labels`: float32 [n, 1] (1 = positive)."""

    dataset: str
    subset: str
    features: NDArray[Any]
    labels: NDArray[Any]
    columns: tuple[str, ...]

    @property
    def n(self) -> int:
        return int(self.labels.shape[0])

    @property
    def images(self) -> NDArray[Any]:
        if self.features.ndim != 4:
            raise AttributeError("this view holds tabular features, not images")
        return self.features

    def to_tf_dataset(self, batch_size: int, *, shuffle_seed: int | None = None) -> "tf.data.Dataset":
        """(x, y) batches; shuffled with a fixed seed when one is given. TensorFlow is
        imported here, not at module import, to keep the data layer light."""
        import tensorflow as tf

        dataset = tf.data.Dataset.from_tensor_slices((self.features, self.labels))
        if shuffle_seed is not None:
            dataset = dataset.shuffle(max(self.n, 1), seed=shuffle_seed, reshuffle_each_iteration=True)
        return dataset.batch(batch_size)


def positive_labels(labels: pd.Series[Any], positive_values: tuple[str, ...]) -> NDArray[Any]:
    positives = set(canonical_text(pd.Series(list(positive_values), dtype="string")).dropna())
    return canonical_text(labels).isin(positives).to_numpy(dtype=np.float32).reshape(-1, 1)


def _years(values: pd.Series[Any]) -> pd.Series[Any]:
    text = values.astype("string")
    plain = pd.to_numeric(text.where(text.str.fullmatch(r"\d{4}").fillna(False)), errors="coerce")
    dated = pd.to_datetime(text.where(plain.isna()), errors="coerce", format="mixed").dt.year
    return plain.fillna(dated).astype("float64")


def _standardized(array: NDArray[Any], train_values: NDArray[Any], mean: float) -> NDArray[Any]:
    """Centred and scaled by the training SAMPLE std (ddof=1, as pandas, R and torch
    compute it, so published protocols reproduce); a constant training column is only centred."""
    std = float(train_values.std(ddof=1)) if train_values.size > 1 else 0.0
    return (array - mean) / (std if std > 0 else 1.0)


def _columns_for(spec: FeatureSpec, values: pd.Series[Any], train: NDArray[Any]) -> tuple[NDArray[Any], list[str]]:
    if spec.transform == "one_hot":
        assert spec.categories is not None
        text = canonical_text(values)
        block = np.stack([(text == c).fillna(False).to_numpy(dtype=np.float64) for c in spec.categories], axis=1)
        if spec.standardize_indicators:
            block = np.stack([_standardized(column, column[train], float(column[train].mean()) if train.any() else 0.0)
                              for column in block.T], axis=1)
        return block.astype(np.float32), [f"{spec.name}={c}" for c in spec.categories]
    numbers = _years(values) if spec.transform == "year" else pd.to_numeric(values, errors="coerce").astype("float64")
    array = numbers.to_numpy(dtype=np.float64)
    train_values = array[train & ~np.isnan(array)]
    mean = float(train_values.mean()) if train_values.size else 0.0
    array = np.where(np.isnan(array), mean, array)  # missing -> training mean
    if spec.transform == "standardize":
        array = _standardized(array, train_values, mean)
    return array.astype(np.float32).reshape(-1, 1), [spec.name]


def bounded(array: NDArray[Any], low: float, high: float) -> NDArray[Any]:
    """Clamped to the public [low, high] and mapped linearly onto [-1, 1]: (x - centre) /
    half-range. Depends on no record but the one transformed."""
    centre, half = 0.5 * (low + high), 0.5 * (high - low)
    return (np.clip(array, low, high) - centre) / half


def _public_columns_for(spec: FeatureSpec, values: pd.Series[Any], allowed: FeaturePolicy | None) -> tuple[NDArray[Any], list[str]]:
    """The DP-plan transform of one feature: a function of this record and public policy values only."""
    if spec.transform == "one_hot":
        assert spec.categories is not None and not spec.standardize_indicators
        text = canonical_text(values)
        block = np.stack([(text == c).fillna(False).to_numpy(dtype=np.float64) for c in spec.categories], axis=1)
        return block.astype(np.float32), [f"{spec.name}={c}" for c in spec.categories]
    numbers = _years(values) if spec.transform == "year" else pd.to_numeric(values, errors="coerce").astype("float64")
    array = numbers.to_numpy(dtype=np.float64)
    array = np.where(np.isnan(array), allowed.public_impute if allowed is not None else 0.0, array)
    if spec.transform == "standardize":
        if allowed is None or allowed.bounds is None:  # check_private_preprocessing refuses this first
            raise NonPrivatePreprocessing(f"feature {spec.name!r}: no public bounds declared", spec.name)
        array = bounded(array, *allowed.bounds)
    return array.astype(np.float32).reshape(-1, 1), [spec.name]


def tabular_view(
    name: str, frame: pd.DataFrame, plan: Plan, subset: str, policy: DatasetPolicy | None = None
) -> TrainingView:
    """Features for `subset`. Plans with train_statistics preprocessing (non-DP by default):
    standardisation and imputation statistics from the train subset only. DP plans, and non-DP
    plans with `preprocessing: public_bounds`: only the dataset `policy`'s public bounds and
    imputation values (required; see the module docstring). Records without a label are left out."""
    frame = frame[frame[plan.label.name].notna()].reset_index(drop=True)
    train = (frame[SPLIT_COLUMN] == "train").to_numpy()
    if plan.uses_public_bounds:
        if policy is None:
            raise NonPrivatePreprocessing(
                "a differentially private (or public_bounds) plan's view needs the dataset policy's public bounds",
                plan.features[0].name)
        check_private_preprocessing(plan, policy)
    blocks: list[NDArray[Any]] = []
    names: list[str] = []
    for spec in plan.features:
        if plan.uses_public_bounds:
            assert policy is not None
            block, block_names = _public_columns_for(spec, frame[spec.name], policy.features.get(spec.name))
        else:
            block, block_names = _columns_for(spec, frame[spec.name], train)
        blocks.append(block)
        names += block_names
    chosen = (frame[SPLIT_COLUMN] == subset).to_numpy()
    features = np.concatenate(blocks, axis=1)[chosen] if blocks else np.zeros((int(chosen.sum()), 0), np.float32)
    labels = positive_labels(frame[plan.label.name], plan.label.positive_values)[chosen]
    return TrainingView(name, subset, np.ascontiguousarray(features, dtype=np.float32), labels, tuple(names))

