"""Flattening TFF type signatures, so values travel and are stored as flat lists of arrays
and are re-assembled only against a type the receiver built itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Leaf:
    """One tensor (or dataset) position in a flattened TFF type."""

    dtype: np.dtype[Any] | None
    shape: tuple[int | None, ...]
    is_sequence: bool = False


def flatten_tensor_types(type_spec: Any) -> list[Leaf]:
    """Depth-first leaves of a TFF type, in the order TFF bindings flatten."""
    from tensorflow_federated.python.core.impl.types import computation_types

    if isinstance(type_spec, computation_types.TensorType):
        shape = tuple(None if d is None else int(d) for d in type_spec.shape)
        return [Leaf(np.dtype(type_spec.dtype), shape)]
    if isinstance(type_spec, computation_types.SequenceType):
        return [Leaf(None, (), is_sequence=True)]
    if isinstance(type_spec, computation_types.StructType):
        leaves: list[Leaf] = []
        for element in type_spec:
            leaves.extend(flatten_tensor_types(element))
        return leaves
    raise TypeError(f"unsupported TFF type {type_spec}")


def count_leaves(type_spec: Any) -> int:
    return len(flatten_tensor_types(type_spec))


def split_counts(struct_type: Any) -> list[int]:
    """Leaf counts of each top-level element of a struct type."""
    return [count_leaves(element) for element in struct_type]


def named_leaf_paths(type_spec: Any, prefix: str = "") -> list[str]:
    """Dotted names of each leaf (positional index where a struct element is unnamed)."""
    from tensorflow_federated.python.common_libs import structure
    from tensorflow_federated.python.core.impl.types import computation_types

    if isinstance(type_spec, computation_types.StructType):
        paths: list[str] = []
        for index, (name, element) in enumerate(structure.iter_elements(type_spec)):
            key = name if name is not None else str(index)
            paths.extend(named_leaf_paths(element, f"{prefix}.{key}" if prefix else key))
        return paths
    return [prefix]
