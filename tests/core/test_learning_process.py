"""Every node builds byte-identical computations for a plan, whatever it built before."""

from __future__ import annotations

import subprocess
import sys

from healthfed_common.learning_process import build_federated_computations
from healthfed_common.plan import parse_plan
from tests.federation.conftest import toy_plan

PRINT_FINGERPRINT = (
    "import sys; from healthfed_common.learning_process import build_federated_computations;"
    "from healthfed_common.plan import parse_plan;"
    "print(build_federated_computations(parse_plan(sys.stdin.read())).fingerprint)"
)


def test_a_node_that_built_another_plan_first_gets_the_fresh_fingerprint() -> None:
    first = parse_plan(toy_plan(rounds=2))
    second = parse_plan(toy_plan(rounds=3, client_optimizer={"name": "sgd", "learning_rate": 0.05}))
    build_federated_computations(first)
    here = build_federated_computations(second).fingerprint
    fresh = subprocess.run(
        [sys.executable, "-c", PRINT_FINGERPRINT], input=second.canonical_bytes().decode(),
        capture_output=True, text=True, check=True,
    ).stdout.strip().splitlines()[-1]
    assert here == fresh
    assert build_federated_computations(first).fingerprint != here  # the learning rate is in the graph
