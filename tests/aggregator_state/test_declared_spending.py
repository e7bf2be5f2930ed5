"""The coordinator can see each hospital's latest declared privacy spending per plan, on
either state backend (the config's database_url chooses)."""

from __future__ import annotations

import json
from pathlib import Path

from aggregator.cli.main import main
from aggregator.config import load_aggregator_config
from aggregator.provisioning import provision_federation
from aggregator.state_store import open_state_store
from tests.aggregator_state.conftest import use_database


def test_latest_declaration_per_silo_is_listed(tmp_path: Path, state_url: str, capsys) -> None:
    federation = provision_federation(tmp_path / "fed", "spend", ["alpha", "bravo"], "127.0.0.1:1")
    use_database(federation.aggregator_config, state_url)
    config = load_aggregator_config(federation.aggregator_config)
    assert config.state_database() == state_url
    with open_state_store(config.state_database()) as store:
        store.record_declaration("p" * 64, 1, "alpha", {"epsilon_spent": 0.4, "epsilon_remaining": 9.6, "delta": 1e-5})
        store.record_declaration("p" * 64, 2, "alpha", {"epsilon_spent": 0.6, "epsilon_remaining": 9.4, "delta": 1e-5})
        store.record_declaration("p" * 64, 2, "bravo", {"epsilon_spent": 0.7, "epsilon_remaining": 2.3, "delta": 1e-5})
    assert main(["spending", "--config", str(federation.aggregator_config), "--json"]) == 0
    rows = {row["silo"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["alpha"]["round"] == 2 and rows["alpha"]["epsilon_spent"] == 0.6
    assert rows["bravo"]["epsilon_remaining"] == 2.3
    assert not (config.state_dir / "aggregator.sqlite3").exists()  # the configured database, not the default
