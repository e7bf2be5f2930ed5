"""The TensorFlow-free table of model ids (what plan approval checks) is the registry's."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from healthfed_common.model_ids import MODEL_KINDS

REPO = Path(__file__).resolve().parents[2]


def test_model_ids_are_the_registry() -> None:
    from healthfed_common.models import MODEL_REGISTRY

    assert {model_id: entry.kind for model_id, entry in MODEL_REGISTRY.items()} == MODEL_KINDS


def test_judging_a_plan_does_not_load_tensorflow() -> None:
    """`plans show` / `plans approve` judge a plan against the node's policy; a data steward
    should not wait for TensorFlow to start to do it."""
    script = ("import sys; from silo_node.approvals import policy_violation, ApprovalPolicy; "
              "from healthfed_common.plan import parse_plan; "
              "plan = parse_plan({'name': 'p', 'dataset': 'd', 'model': {'id': 'mlp'}, "
              "'features': [{'name': 'age', 'transform': 'identity'}], 'label': {'name': 'y'}, 'rounds': 1, "
              "'client_optimizer': {'name': 'sgd', 'learning_rate': 0.1}, 'local_epochs': 1, 'batch_size': 8, "
              "'min_silos_per_round': 2, 'secure_aggregation': {'protocol': 'none'}}); "
              "print(policy_violation(plan, ApprovalPolicy(require_secure_aggregation=False, require_dp=False))); "
              "print('tensorflow' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["None", "False"], result.stdout
