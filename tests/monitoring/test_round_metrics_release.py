"""Round metrics released through TFF's CSV and TensorBoard release managers, read back from
the real files they write, including a resume after a crash that re-runs a round."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.metrics_release import RoundMetricsRelease, plan_metrics_dir
from tests.monitoring.release_files import read_csv, read_scalars


def _record(round_number: int, loss: float, silos: list[str]) -> dict:
    return {"round": round_number, "attempt": 1, "silos": silos, "seconds": 1.5 + round_number,
            "aggregate": {"loss": loss, "binary_accuracy": 0.5 + loss / 10}, "per_silo": {}}


def test_one_csv_row_and_one_set_of_scalars_per_round(tmp_path: Path) -> None:
    directory = plan_metrics_dir(tmp_path / "metrics", "ab" * 32)
    release = RoundMetricsRelease(directory)
    declared = {"north": {"epsilon_spent": 0.4, "epsilon_remaining": 2.6, "delta": 1e-5}}
    for round_number in (1, 2, 3):
        release.release_round(round_number, _record(round_number, 0.7 - 0.1 * round_number, ["north", "south"]),
                              declared if round_number == 3 else None)

    rows = read_csv(directory / "metrics.csv")
    assert [row["round"] for row in rows] == ["1", "2", "3"]
    assert {"round", "round_seconds", "silos", "attempt", "silo_ids", "train/loss", "train/binary_accuracy",
            "dp/north/epsilon_spent", "dp/north/delta"} <= set(rows[0])
    assert rows[0]["silos"] == "2" and rows[0]["silo_ids"] == "north south"
    assert float(rows[1]["train/loss"]) == pytest.approx(0.5)
    assert rows[0]["dp/north/epsilon_spent"] == "" and float(rows[2]["dp/north/epsilon_spent"]) == 0.4

    # Read while the releaser is still open: each release is flushed, not left in a queue.
    scalars = read_scalars(directory / "tensorboard")
    assert sorted(scalars["train/loss"]) == [1, 2, 3]
    assert scalars["train/loss"][2] == [pytest.approx(0.5)]
    assert scalars["silos"][1] == [2.0] and scalars["round_seconds"][3] == [pytest.approx(4.5)]
    assert scalars["dp/north/epsilon_spent"] == {3: [pytest.approx(0.4)]}
    assert "silo_ids" not in scalars


def test_a_resumed_plan_replaces_a_rerun_round_instead_of_duplicating_it(tmp_path: Path) -> None:
    directory = tmp_path / "metrics" / "plan"
    first = RoundMetricsRelease(directory)
    for round_number in (1, 2, 3):
        first.release_round(round_number, _record(round_number, 0.9, ["north", "south", "east"]))
    del first  # the aggregator died after releasing round 3, before checkpointing it

    resumed = RoundMetricsRelease(directory)  # a new process, same files
    for round_number in (3, 4):
        resumed.release_round(round_number, _record(round_number, 0.3, ["north", "south"]))

    rows = read_csv(directory / "metrics.csv")
    assert [row["round"] for row in rows] == ["1", "2", "3", "4"]
    assert rows[2]["silos"] == "2" and float(rows[2]["train/loss"]) == 0.3
    assert len(list((directory / "tensorboard").glob("events.out.tfevents.*"))) == 2
    assert sorted(read_scalars(directory / "tensorboard")["train/loss"]) == [1, 2, 3, 4]
