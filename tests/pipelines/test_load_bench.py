"""The load benchmark's smallest real run: 3 silo processes x 2 rounds, plain aggregation, cold
then warm plan cache, through its command line. Checks that the figures it writes are there and
consistent, and that the cold run traced on every node and the warm run on none, not the
timings (the machine is shared)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_three_silos_two_rounds_write_the_load_figures(tmp_path: Path) -> None:
    out = tmp_path / "load.json"
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "load_bench.py"), "--silos", "3", "--rounds", "2",
         "--secure-aggregation", "none", "--work-dir", str(tmp_path / "work"), "--out", str(out)],
        capture_output=True, text=True, timeout=900, cwd=REPO,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "round 2/2" in done.stdout  # progress is printed per round
    figures = json.loads(out.read_text())
    assert figures["command"].startswith("python benchmarks/load_bench.py --silos 3")
    assert figures["machine"]["logical_cores"] >= 1 and len(figures["machine"]["load_average_at_start"]) == 3
    assert figures["complete"] is True
    cold, warm = figures["runs"]
    assert (cold["plan_cache"], warm["plan_cache"]) == ("cold", "warm")
    assert cold["plan_name"] != warm["plan_name"]  # another hash: the warm entry cannot be the cold run's
    for run in (cold, warm):
        assert run["rounds_completed"] == 2 and run["silos_counted_per_round"] == {"min": 3, "max": 3}
        assert len(run["round_seconds"]["each"]) == 2 and run["rounds_per_minute"] > 0
        assert run["released_csv_rows"] == 2
        memory = run["memory"]
        assert set(memory["silos"]) == {"hospital-00", "hospital-01", "hospital-02"}
        assert memory["aggregator"]["peak_rss_mib"] > 100
        assert memory["federation_sum_rss_peak_mib"] >= memory["federation_sum_anon_peak_mib"] > 0
    # cold: every process traced the plan in a child, and the sampler saw it
    # (other children, such as the `uname -p` a library runs while importing, may come and go)
    tracers = [c for c in cold["memory"]["aggregator"]["children"] if c["command"] == "healthfed_common.learning_process"]
    assert len(tracers) == 1
    assert cold["memory"]["silo_children_peak_rss_mib"]["count"] == 3
    for silo in cold["memory"]["silos"].values():
        assert [c["command"] for c in silo["children"]].count("healthfed_common.learning_process") == 1
    assert cold["nodes_that_traced"] == ["aggregator", "hospital-00", "hospital-01", "hospital-02"]
    # warm: every node loaded the seeded entry from its own cache, none traced
    assert warm["plan_cache_preparation"]["nodes_seeded"] == 4
    assert warm["nodes_that_traced"] == []
    assert "healthfed_common.learning_process" not in [c["command"] for c in warm["memory"]["aggregator"]["children"]]
    assert warm["memory"]["silo_children_peak_rss_mib"]["count"] == 0
    (row,) = figures["comparison"]
    assert row["round_1_seconds"] == {"cold": cold["round_seconds"]["each"][0], "warm": warm["round_seconds"]["each"][0]}
    assert row["round_1_cold_over_warm"] > 0
