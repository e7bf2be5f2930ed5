"""Architecture rules that must fail loudly: role independence, and no side effects at
import (TFF's runtime, which would spawn an unauthenticated worker, is never started)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold() -> None:
    """Every import-linter contract in pyproject.toml holds: silo_node and aggregator never
    import each other; healthfed_common imports no role; the layers pipelines > roles >
    compliance > healthfed_common; healthfed_common.secagg imports no TensorFlow and no
    `random`, and its client and server are independent. Counted as "0 broken", so a new
    contract needs no edit here."""
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"Contracts: [1-9]\d* kept, 0 broken\.", result.stdout), result.stdout


def test_environment_carries_the_deliberate_pins() -> None:
    """TFF 0.87 is installed beside jax 0.4.13 and typing-extensions 4.12 (see requirements/tff.txt)."""
    from importlib.metadata import version

    assert version("tensorflow-federated") == "0.87.0"
    assert version("jax") == "0.4.13"
    assert version("pydantic").startswith("2.")
    assert version("typing_extensions") == "4.12.2"
    assert version("tensorflow") == "2.14.1"
