"""Every node builds byte-identical computations for a plan, whatever it built before."""

from __future__ import annotations

import subprocess
import sys

from healthfed_common.learning_process import _from_serialized, build_federated_computations
from healthfed_common.plan import parse_plan
from healthfed_common.plan_cache import unframe
from tests.federation.conftest import toy_plan


def _traced_by_a_process_that_built_nothing_before(plan) -> str:  # type: ignore[no-untyped-def]
    """The fingerprint of what the tracer module gives when run as a process of its own: a
    node that has traced nothing before. (Run directly, not through a second process that
    would import TensorFlow only to start this one.)"""
    traced = subprocess.run(
        [sys.executable, "-m", "healthfed_common.learning_process"], input=plan.canonical_bytes(),
        capture_output=True, check=True,
    ).stdout
    return _from_serialized(plan, unframe(traced)).fingerprint


def test_a_node_that_built_another_plan_first_gets_the_fresh_fingerprint() -> None:
    first = parse_plan(toy_plan(rounds=2))
    second = parse_plan(toy_plan(rounds=3, client_optimizer={"name": "sgd", "learning_rate": 0.05}))
    build_federated_computations(first)
    here = build_federated_computations(second).fingerprint
    assert here == _traced_by_a_process_that_built_nothing_before(second)
    assert build_federated_computations(first).fingerprint != here  # the learning rate is in the graph
