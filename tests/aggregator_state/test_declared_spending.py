"""The coordinator can see each hospital's latest declared privacy spending per plan."""

from __future__ import annotations

import json
from pathlib import Path

from aggregator.cli.main import main
from aggregator.config import load_aggregator_config
from aggregator.provisioning import provision_federation
from aggregator.state_store import StateStore


def test_latest_declaration_per_silo_is_listed(tmp_path: Path, capsys) -> None:
    federation = provision_federation(tmp_path / "fed", "spend", ["alpha", "bravo"], "127.0.0.1:1")
    config = load_aggregator_config(federation.aggregator_config)
    store = StateStore(config.state_dir / "aggregator.sqlite3")
    store.record_declaration("p" * 64, 1, "alpha", {"epsilon_spent": 0.4, "epsilon_remaining": 9.6, "delta": 1e-5})
    store.record_declaration("p" * 64, 2, "alpha", {"epsilon_spent": 0.6, "epsilon_remaining": 9.4, "delta": 1e-5})
    store.record_declaration("p" * 64, 2, "bravo", {"epsilon_spent": 0.7, "epsilon_remaining": 2.3, "delta": 1e-5})
    store.close()
    assert main(["spending", "--config", str(federation.aggregator_config), "--json"]) == 0
    rows = {row["silo"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["alpha"]["round"] == 2 and rows["alpha"]["epsilon_spent"] == 0.6
    assert rows["bravo"]["epsilon_remaining"] == 2.3
