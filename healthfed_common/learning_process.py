"""Builds, from a plan, the TFF learning process and its MapReduceForm split.

Both roles call `build_federated_computations(plan)`: the aggregator to run the server
steps, each silo to run `work` -- and each compares the other's fingerprint with its own, so
no computation ever has to travel over the network.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from healthfed_common.client_weighting import DEFAULT_CLIENT_WEIGHTING, max_client_weight
from healthfed_common.models import model_entry
from healthfed_common.plan import OptimizerSpec, Plan
from healthfed_common.plan_cache import PlanCache, frame, traced_sources, unframe
from healthfed_common.tf_graph import GraphComputation
from healthfed_common.tff_types import count_leaves, flatten_tensor_types, split_counts

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
log = logging.getLogger(__name__)

MRF_COMPONENTS = ("prepare", "work", "zero", "accumulate", "merge", "report", "update")
SOURCES_PART = "healthfed_sources"


def model_input_shape(plan: Plan) -> tuple[int, ...]:
    """Per-example input shape: a feature vector for tabular models, a 1-channel image for
    image models."""
    if model_entry(plan.model.id).kind == "image":
        size = plan.model.image_size or 64
        return (size, size, 1)
    return (plan.input_width,)


def build_keras_model(plan: Plan) -> Any:
    entry = model_entry(plan.model.id)
    return entry.build(plan.model, model_input_shape(plan), plan.seeds.model_init)


def tff_optimizer(spec: OptimizerSpec) -> Any:
    """The plan's optimizer as a TFF optimizer (also what a silo fine-tunes with when the
    plan asks for personalisation)."""
    import tensorflow_federated as tff

    if spec.name == "sgd":
        return tff.learning.optimizers.build_sgdm(learning_rate=spec.learning_rate)
    if spec.name == "sgdm":
        return tff.learning.optimizers.build_sgdm(
            learning_rate=spec.learning_rate, momentum=spec.momentum or 0.9
        )
    if spec.name == "adam":
        return tff.learning.optimizers.build_adam(learning_rate=spec.learning_rate)
    return tff.learning.optimizers.build_yogi(learning_rate=spec.learning_rate)


def _input_spec(plan: Plan) -> Any:
    import tensorflow as tf

    return (
        tf.TensorSpec((None, *model_input_shape(plan)), tf.float32),
        tf.TensorSpec((None, 1), tf.float32),
    )


def build_learning_process(plan: Plan) -> Any:
    """FedAvg weighted by examples (by expected examples under DP-SGD), with the model delta
    and the weights summed through `SecureSumFactory`: the update leaves `work` already
    clipped and quantized to integers, ready for secure aggregation. With `plan.dp` the
    client work is record-level DP-SGD (healthfed_common.dp), so what leaves is noised.
    With `plan.algorithm` fedprox the client work adds the proximal gradient
    mu * (w - w_global) to every local step (`healthfed_common.fedprox`; under DP-SGD after
    clipping and noise, `dp.client_work.dp_sgd_step_gradient`); aggregation, secure sum and
    server step are the same. `plan.algorithm.client_weighting` sets each silo's update weight
    (healthfed_common.client_weighting); the weight's secure-sum bound follows it."""
    import tensorflow as tf
    import tensorflow_federated as tff

    model_entry(plan.model.id)  # fail fast with UnknownModel

    def model_fn() -> Any:
        return tff.learning.models.from_keras_model(
            build_keras_model(plan),
            loss=tf.keras.losses.BinaryCrossentropy(),
            input_spec=_input_spec(plan),
            metrics=[tf.keras.metrics.BinaryAccuracy()],
        )

    # Under DP-SGD a silo's weight is a function of its summed expected batch sizes, which can
    # exceed examples x epochs by up to one batch per epoch.
    weighting = plan.algorithm.client_weighting
    max_examples = plan.local_epochs * (plan.max_examples_per_silo + (plan.batch_size if plan.dp else 0))
    max_weight = max_client_weight(max_examples, weighting)
    aggregator = tff.aggregators.MeanFactory(
        value_sum_factory=tff.aggregators.SecureSumFactory(
            upper_bound_threshold=float(plan.update_bound),
            lower_bound_threshold=-float(plan.update_bound),
        ),
        weight_sum_factory=tff.aggregators.SecureSumFactory(
            upper_bound_threshold=float(max_weight),
            lower_bound_threshold=0.0,
        ),
    )
    if plan.dp is not None:
        from healthfed_common.dp.process import build_dp_fed_avg

        return build_dp_fed_avg(
            model_fn,
            client_optimizer=tff_optimizer(plan.client_optimizer),
            server_optimizer=tff_optimizer(plan.server_optimizer),
            l2_norm_clip=plan.dp.l2_norm_clip,
            model_aggregator=aggregator,
            proximal_strength=plan.algorithm.proximal_strength,
            client_weighting=weighting,
        )
    if plan.algorithm.proximal_strength is not None or weighting != DEFAULT_CLIENT_WEIGHTING:
        from healthfed_common.fedprox import build_weighted_fed_prox

        # not tff.learning.algorithms.build_weighted_fed_prox: TFF 0.87's proximal term has the
        # wrong sign (healthfed_common.fedprox says how that was found). FedAvg with another
        # weighting runs here too, with no proximal term (TFF 0.87's FedAvg over a Keras model
        # takes only its two built-in weightings, and "uniform" there counts an empty silo).
        return build_weighted_fed_prox(
            model_fn,
            proximal_strength=plan.algorithm.proximal_strength,
            client_optimizer=tff_optimizer(plan.client_optimizer),
            server_optimizer=tff_optimizer(plan.server_optimizer),
            model_aggregator=aggregator,
            client_weighting=weighting,
        )
    return tff.learning.algorithms.build_weighted_fed_avg(
        model_fn,
        client_optimizer_fn=tff_optimizer(plan.client_optimizer),
        server_optimizer_fn=tff_optimizer(plan.server_optimizer),
        model_aggregator=aggregator,
    )


@dataclass(frozen=True)
class FederatedComputations:
    """The MapReduceForm of one plan, as in-process graph computations."""

    plan: Plan
    initialize: GraphComputation
    prepare: GraphComputation
    work: GraphComputation
    zero: GraphComputation
    accumulate: GraphComputation
    merge: GraphComputation
    report: GraphComputation
    update: GraphComputation
    secure_sum_bitwidths: tuple[int, ...]
    has_max_input_sums: bool
    has_modular_sums: bool

    @property
    def fingerprint(self) -> str:
        """One digest over every component, in a fixed order."""
        digest = hashlib.sha256()
        for name in ("initialize", *MRF_COMPONENTS):
            digest.update(f"{name}={getattr(self, name).fingerprint};".encode())
        digest.update(repr(self.secure_sum_bitwidths).encode())
        return digest.hexdigest()

    @property
    def work_parts(self) -> list[int]:
        """Leaf counts of work's outputs: [for accumulate, bitwidth sums, max-input sums,
        modular sums]."""
        return split_counts(self.work.type_signature.result)

    @property
    def state_size(self) -> int:
        return count_leaves(self.update.type_signature.result[0])

    @property
    def model_weight_count(self) -> int:
        return count_leaves(self.update.type_signature.result[0][0])

    def model_weights(self, state: list[np.ndarray[Any, Any]]) -> list[np.ndarray[Any, Any]]:
        """Trainable then non-trainable weights, read from the server state."""
        return state[: self.model_weight_count]


def serialize_federated_computations(plan: Plan) -> dict[str, bytes]:
    """Traces the plan's process in THIS process and returns each component's serialized
    proto plus the form's static facts. Meant to run in a fresh process (see below)."""
    import tensorflow as tf
    import tensorflow_federated as tff

    # TFF's tracing leaves unused assert ops that TF reports at ERROR level; they are noise.
    tf.get_logger().setLevel(logging.CRITICAL)
    process = build_learning_process(plan)
    mrf = tff.backends.mapreduce.get_map_reduce_form_for_computation(process.next)
    initialize = tff.backends.mapreduce.get_state_initialization_computation(process.initialize)
    protos = {name: getattr(mrf, name) for name in MRF_COMPONENTS}
    protos["initialize"] = initialize
    protos["secure_sum_bitwidth"] = mrf.secure_sum_bitwidth
    out = {name: tff.framework.serialize_computation(c).SerializeToString(deterministic=True) for name, c in protos.items()}
    facts = {
        "has_max_input_sums": len(flatten_tensor_types(mrf.secure_sum_max_input.type_signature.result)) > 0,
        "has_modular_sums": len(flatten_tensor_types(mrf.secure_modular_sum_modulus.type_signature.result)) > 0,
    }
    out["facts"] = json.dumps(facts).encode()
    return out


def _from_serialized(plan: Plan, blobs: dict[str, bytes]) -> FederatedComputations:
    from tensorflow_federated.proto.v0 import computation_pb2

    def graph(name: str) -> GraphComputation:
        proto = computation_pb2.Computation()
        proto.ParseFromString(blobs[name])
        return GraphComputation(proto)

    facts = json.loads(blobs["facts"])
    return FederatedComputations(
        plan=plan,
        initialize=graph("initialize"),
        secure_sum_bitwidths=tuple(int(b) for b in graph("secure_sum_bitwidth")()),
        has_max_input_sums=bool(facts["has_max_input_sums"]),
        has_modular_sums=bool(facts["has_modular_sums"]),
        **{name: graph(name) for name in MRF_COMPONENTS},
    )


@functools.lru_cache(maxsize=8)
def build_federated_computations(plan: Plan, cache_dir: Path | None = None) -> FederatedComputations:
    """The plan's computations, from this node's traced-plan cache in `cache_dir` when it
    holds a verified entry for this plan, build and TensorFlow version; otherwise traced in a
    fresh Python process (`trace_in_fresh_process`) and, with `cache_dir`, stored there for the
    next start. Callers compare `.fingerprint`, computed from the bytes actually loaded, with
    their peer's, whichever way the bytes came (healthfed_common.plan_cache says why the cache
    is not trusted further)."""
    model_entry(plan.model.id)  # fail fast, in this process, with UnknownModel
    if cache_dir is None:
        return _from_serialized(plan, trace_in_fresh_process(plan))
    cache = PlanCache(cache_dir)
    cached = cache.load(plan)
    if cached is not None:
        try:
            loaded = _from_serialized(plan, cached.blobs)
        except Exception as error:  # unparsable protos despite a good digest: rebuilt, never trusted
            log.warning("plan cache: ignoring %s (PLAN_CACHE_INVALID: %s); tracing the plan again",
                        cache.path(plan).name, type(error).__name__)
        else:
            if loaded.fingerprint == cached.fingerprint:
                return loaded
            log.warning("plan cache: ignoring %s (PLAN_CACHE_INVALID: loaded graphs give another fingerprint "
                        "than recorded); tracing the plan again", cache.path(plan).name)
    blobs = trace_in_fresh_process(plan)
    computations = _from_serialized(plan, blobs)
    cache.store(plan, blobs, computations.fingerprint, json.loads(blobs.get(SOURCES_PART, b"{}")))
    return computations


def trace_in_fresh_process(plan: Plan) -> dict[str, bytes]:
    """Traced in a fresh Python process, always. TF numbers traced functions with a
    process-wide counter (`__inference_client_update_<n>`), so the graphs a process traces
    depend on what it traced before: a silo that already ran one plan would build another
    fingerprint for the next plan than the aggregator. A fresh process gives every node the
    same bytes for the same plan and HealthFed version. (It also keeps the tracer's ~700 MiB
    out of the node's own process: they are returned to the OS when the child exits.)"""
    result = subprocess.run(
        [sys.executable, "-m", "healthfed_common.learning_process"],
        input=plan.canonical_bytes(), capture_output=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    if result.returncode != 0:
        tail = result.stderr.decode(errors="replace").strip().splitlines()[-5:]
        raise RuntimeError("building the plan's computation failed: " + " | ".join(tail))
    return unframe(result.stdout)


if __name__ == "__main__":
    from healthfed_common.plan import parse_plan

    parts = serialize_federated_computations(parse_plan(sys.stdin.buffer.read()))
    parts[SOURCES_PART] = json.dumps(traced_sources()).encode()  # what a cache entry of it depends on
    sys.stdout.buffer.write(frame(parts))
