"""Fixtures for the compliance tests (helpers live in compliance_support.py so test modules
can import them by a name no other test directory uses)."""

from __future__ import annotations

from pathlib import Path

import pytest
from compliance_support import SteppingClock, open_log, populate


@pytest.fixture()
def node(tmp_path: Path) -> Path:
    """A node state dir with a populated, closed audit log (entries 0..15)."""
    node_dir = tmp_path / "node"
    with open_log(node_dir, SteppingClock()) as log:
        populate(log)
    return node_dir
