"""One round's server side: fold the silos' plain metric parts through the MapReduceForm's
accumulate/merge/report, sum the integer parts, and run `update`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from healthfed_common.learning_process import FederatedComputations
from healthfed_common.tff_types import flatten_tensor_types, named_leaf_paths
from healthfed_common.wire.messages import TrainResult
from typing import Any


@dataclass(frozen=True)
class RoundOutcome:
    state: list[NDArray[Any]]
    metrics: dict[str, float]
    per_silo: dict[str, dict[str, float]]


def expected_result_problem(computations: FederatedComputations, result: TrainResult, *, secure: bool = False) -> str | None:
    """Why a silo's result cannot be aggregated (wrong count, dtype or shape), or None. In a
    securely aggregated round the integer parts must NOT be sent in the result (they travel
    masked), and a key advertisement must be."""
    leaves = flatten_tensor_types(computations.work.type_signature.result)
    parts = computations.work_parts
    metric_leaves, secure_leaves = leaves[: parts[0]], leaves[parts[0] : parts[0] + parts[1]]
    if secure:
        from healthfed_common.secagg import KeyAdvertisement

        if not isinstance(result.secagg, KeyAdvertisement):
            return "a securely aggregated round needs the silo's key advertisement"
        secure_leaves = []
    for label, values, expected in (
        ("metrics_part", result.metrics_part, metric_leaves),
        ("secure_parts", result.secure_parts, secure_leaves),
    ):
        if len(values) != len(expected):
            return f"{label}: expected {len(expected)} arrays, got {len(values)}"
        for index, (value, leaf) in enumerate(zip(values, expected)):
            if value.dtype != leaf.dtype or tuple(value.shape) != tuple(leaf.shape):
                return f"{label}[{index}]: expected {leaf.dtype}{list(leaf.shape)}, got {value.dtype}{list(value.shape)}"
    return None


def plain_sum(parts: Sequence[Sequence[NDArray[Any]]], bitwidths: Sequence[int]) -> list[NDArray[Any]]:
    """The integer sums without secure aggregation: exact, in each leaf's own dtype. Each
    input must lie in [0, 2^bitwidth) as the form promises."""
    sums: list[NDArray[Any]] = []
    for index, bitwidth in enumerate(bitwidths):
        values = [np.asarray(p[index]) for p in parts]
        for value in values:
            if value.size and (value.min() < 0 or int(value.max()) >= 2**bitwidth):
                raise ValueError(f"secure part {index} outside [0, 2^{bitwidth})")
        sums.append(np.sum(values, axis=0, dtype=values[0].dtype))
    return sums


def _ratio_metrics(paths: list[str], values: Sequence[NDArray[Any]]) -> dict[str, float]:
    """Metric leaves come as (total, count) pairs named `name.0`/`name.1`, or single values."""
    out: dict[str, float] = {}
    grouped: dict[str, list[float]] = {}
    for path, value in zip(paths, values):
        base, _, last = path.rpartition(".")
        key = base if last.isdigit() and base else path
        grouped.setdefault(key.split(".")[-1], []).append(float(np.asarray(value).sum()))
    for name, numbers in grouped.items():
        out[name] = numbers[0] / numbers[1] if len(numbers) == 2 and numbers[1] else numbers[0]
    return out


def silo_training_metrics(computations: FederatedComputations, result: TrainResult) -> dict[str, float]:
    paths = named_leaf_paths(computations.work.type_signature.result[0])
    return _ratio_metrics(paths, result.metrics_part)


def aggregate_round(
    computations: FederatedComputations, state: list[NDArray[Any]], results: Sequence[TrainResult],
    secure_sums: list[NDArray[Any]] | None = None,
) -> RoundOutcome:
    if not results:
        raise ValueError("cannot aggregate a round without results")
    zero = computations.zero()
    merged: list[NDArray[Any]] | None = None
    for result in results:
        accumulator = computations.accumulate(list(zero) + list(result.metrics_part))
        merged = accumulator if merged is None else computations.merge(merged + accumulator)
    assert merged is not None
    report = computations.report(merged)
    sums = secure_sums if secure_sums is not None else plain_sum(
        [r.secure_parts for r in results], computations.secure_sum_bitwidths
    )
    output = computations.update(list(state) + report + sums)
    new_state = output[: computations.state_size]
    server_output = output[computations.state_size :]
    output_paths = named_leaf_paths(computations.update.type_signature.result[1])
    metrics = {
        path.split(".")[-1]: float(np.asarray(value))
        for path, value in zip(output_paths, server_output)
        if ".train." in f".{path}."
    }
    per_silo = {r.silo_id: silo_training_metrics(computations, r) for r in results}
    return RoundOutcome(new_state, metrics, per_silo)
