"""Runs a TFF TensorFlow computation inside this process, from its serialized proto.

Why not TFF's own runtime: in TFF 0.87 every call goes through a bundled `worker_binary`
that TFF spawns on first use, that listens without authentication on all interfaces, and
that outlives its parent. A hospital silo must not open such a port, so HealthFed runs the
MapReduceForm's components -- each a plain TensorFlow graph -- with a private TF1 session.
Nothing listens, nothing outlives the call, and the bytes that are executed are the bytes
whose fingerprint was compared.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
from tensorflow_federated.proto.v0 import computation_pb2

from healthfed_common.tff_types import flatten_tensor_types

DatasetFactory = Callable[[], tf.data.Dataset]


@dataclass(frozen=True)
class TensorSlot:
    """A tensor the graph takes or returns, by graph tensor name."""

    tensor_name: str
    dtype: np.dtype[Any]
    shape: tuple[int | None, ...]


@dataclass(frozen=True)
class SequenceSlot:
    """A `tf.data.Dataset` the graph takes, as a variant tensor."""

    variant_tensor_name: str


Slot = TensorSlot | SequenceSlot


def _flatten_binding(binding: computation_pb2.TensorFlow.Binding) -> list[tuple[str, str]]:
    """Depth-first (kind, name) pairs: the order TFF's structures flatten in."""
    kind = binding.WhichOneof("binding")
    if kind == "tensor":
        return [("tensor", binding.tensor.tensor_name)]
    if kind == "sequence":
        return [("sequence", binding.sequence.variant_tensor_name)]
    if kind == "struct":
        flat: list[tuple[str, str]] = []
        for element in binding.struct.element:
            flat.extend(_flatten_binding(element))
        return flat
    if kind is None:
        return []
    raise ValueError(f"unsupported binding kind {kind!r}")


def _node_name(tensor_name: str) -> str:
    return tensor_name.split(":", 1)[0]


class GraphComputation:
    """One TFF TensorFlow computation, callable with flat numpy values and datasets."""

    def __init__(self, proto: computation_pb2.Computation) -> None:
        if proto.WhichOneof("computation") != "tensorflow":
            raise ValueError(
                f"expected a TensorFlow computation, got {proto.WhichOneof('computation')!r}"
            )
        from tensorflow_federated.python.core.impl.types import type_serialization
        from tensorflow_federated.python.tensorflow_libs import serialization_utils

        self._proto = proto
        self.fingerprint = hashlib.sha256(proto.SerializeToString(deterministic=True)).hexdigest()
        self.type_signature = type_serialization.deserialize_type(proto.type)
        self._graph_def = serialization_utils.unpack_graph_def(proto.tensorflow.graph_def)
        tf_proto = proto.tensorflow
        self._initialize_op = tf_proto.initialize_op or None
        self._session_token = tf_proto.session_token_tensor_name or None

        parameter_type = self.type_signature.parameter
        parameter_leaves = flatten_tensor_types(parameter_type) if parameter_type is not None else []
        parameter_names = (
            _flatten_binding(tf_proto.parameter) if tf_proto.HasField("parameter") else []
        )
        if len(parameter_leaves) != len(parameter_names):
            raise ValueError("parameter binding and type signature disagree")
        self.parameter_slots: list[Slot] = []
        for (kind, name), leaf in zip(parameter_names, parameter_leaves):
            if kind == "sequence":
                self.parameter_slots.append(SequenceSlot(name))
            else:
                if leaf.dtype is None:
                    raise ValueError(f"parameter {name} has no dtype")
                self.parameter_slots.append(TensorSlot(name, leaf.dtype, leaf.shape))
        result_names = _flatten_binding(tf_proto.result)
        if any(kind != "tensor" for kind, _ in result_names):
            raise ValueError("computations returning datasets are not supported")
        self._result_names = [name for _, name in result_names]
        self.result_leaves = flatten_tensor_types(self.type_signature.result)

    def __call__(
        self,
        tensors: Sequence[Any] = (),
        datasets: Sequence[DatasetFactory] = (),
    ) -> list[np.ndarray[Any, Any]]:
        """Runs the graph once. `tensors` fill the tensor slots in order, `datasets` the
        sequence slots; dataset factories are called inside the private graph."""
        tensor_slots = [s for s in self.parameter_slots if isinstance(s, TensorSlot)]
        sequence_slots = [s for s in self.parameter_slots if isinstance(s, SequenceSlot)]
        if len(tensors) != len(tensor_slots):
            raise ValueError(f"expected {len(tensor_slots)} tensors, got {len(tensors)}")
        if len(datasets) != len(sequence_slots):
            raise ValueError(f"expected {len(sequence_slots)} datasets, got {len(datasets)}")
        graph = tf.Graph()
        feed: dict[Any, Any] = {}
        with graph.as_default():
            input_map: dict[str, Any] = {}
            tensor_values = iter(tensors)
            dataset_factories = iter(datasets)
            for slot in self.parameter_slots:
                if isinstance(slot, TensorSlot):
                    value = np.asarray(next(tensor_values), dtype=slot.dtype)
                    _check_shape(slot, value)
                    placeholder = tf.compat.v1.placeholder(slot.dtype, shape=slot.shape)
                    feed[placeholder] = value
                    input_map[slot.tensor_name] = placeholder
                else:
                    dataset = next(dataset_factories)()
                    input_map[slot.variant_tensor_name] = tf.data.experimental.to_variant(dataset)
            for name, tensor in list(input_map.items()):
                input_map["^" + _node_name(name)] = "^" + tensor.op.name
            if self._session_token:
                input_map[self._session_token] = tf.constant("healthfed")
            return_elements = list(self._result_names)
            if self._initialize_op:
                return_elements.append(self._initialize_op)
            imported = tf.graph_util.import_graph_def(
                self._graph_def, input_map=input_map, return_elements=return_elements, name="c"
            )
        init_op = imported.pop() if self._initialize_op else None
        with tf.compat.v1.Session(graph=graph) as session:
            if init_op is not None:
                session.run(init_op, feed_dict=feed)
            results = session.run(imported, feed_dict=feed) if imported else []
        return [np.asarray(r) for r in results]


def _check_shape(slot: TensorSlot, value: np.ndarray[Any, Any]) -> None:
    if len(slot.shape) != value.ndim or any(
        expected is not None and expected != got for expected, got in zip(slot.shape, value.shape)
    ):
        raise ValueError(
            f"tensor {slot.tensor_name}: expected shape {slot.shape}, got {value.shape}"
        )
