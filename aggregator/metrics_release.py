"""Per-round metrics released to files through TFF's program release managers: one CSV row
and one set of TensorBoard scalars per completed round, keyed by the round number.

Why TFF's managers (`tff.program.CSVFileReleaseManager`, `tff.program.TensorBoardReleaseManager`)
rather than our own writer: they are the release path TFF programs use, and the CSV manager's
key semantics are exactly what a resumable plan needs -- releasing round r first drops every
row with a key >= r, so a round that is run again after a crash replaces its row instead of
duplicating it. Neither manager runs a computation, so TFF's execution context (and its
`worker_binary`) is never started by releasing.

Only aggregate figures are released: round seconds, the number of silos counted, the aggregate
training metrics the form reports, and the DP spending silos declared. Per-silo training
metrics stay in the run report and never go to these files.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import tensorflow as tf
import tensorflow_federated as tff

from aggregator.errors import AggregatorError

log = logging.getLogger("healthfed.aggregator")

CSV_NAME = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"
KEY_FIELD = "round"


class RoundMetricsUnusable(AggregatorError, RuntimeError):
    """The metrics directory holds a CSV this release path cannot continue (no `round` column)."""


def plan_metrics_dir(root: Path, plan_hash: str) -> Path:
    """One directory per plan: several plans share one aggregator state dir, and a plan's
    round 1 must never replace another plan's rows. The hash prefix matches task ids."""
    return root / plan_hash[:16]


def release_value(record: Mapping[str, Any], declarations: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """The structure released for one round. Nested keys become `train/loss`,
    `dp/<silo>/epsilon_spent` (CSV columns and TensorBoard tags alike). `silo_ids` is a
    string, which the CSV keeps and TensorBoard skips (it releases numbers only)."""
    value: dict[str, Any] = {
        "round_seconds": float(record["seconds"]),
        "silos": len(record["silos"]),
        "attempt": int(record["attempt"]),
        "silo_ids": " ".join(record["silos"]),
        "train": {name: float(number) for name, number in sorted(record["aggregate"].items())},
    }
    if declarations:
        value["dp"] = {
            silo: {name: float(number) for name, number in sorted(spent.items())}
            for silo, spent in sorted(declarations.items())
        }
    return value


class _FlushingTensorBoardReleaseManager(tff.program.TensorBoardReleaseManager):
    """TFF's manager leaves events in the writer's queue (flushed every 2 minutes or 10
    events); an aggregator killed mid-plan would lose its last rounds. Flushing after each
    release makes the event file as durable as the CSV. The writer is a private attribute
    of TFF 0.87's class, which requirements/tff.txt pins."""

    async def release(self, value: Any, key: int) -> None:
        await super().release(value, key)
        self._summary_writer.flush()


class RoundMetricsRelease:
    """Releases each completed round to `directory/metrics.csv` and `directory/tensorboard/`."""

    def __init__(self, directory: Path, *, warn: Callable[[str], None] | None = None) -> None:
        self.directory = directory
        self.csv_path = directory / CSV_NAME
        self.tensorboard_dir = directory / TENSORBOARD_DIR
        self._warn = warn
        try:
            self._csv = tff.program.CSVFileReleaseManager(
                os.fspath(self.csv_path), save_mode=tff.program.CSVSaveMode.APPEND, key_fieldname=KEY_FIELD
            )
        except tff.program.CSVKeyFieldnameNotFoundError as error:
            raise RoundMetricsUnusable(f"{self.csv_path} has no {KEY_FIELD!r} column; move it away") from error
        self._tensorboard = _FlushingTensorBoardReleaseManager(os.fspath(self.tensorboard_dir))

    async def _release(self, value: dict[str, Any], round_number: int) -> None:
        await asyncio.gather(
            self._csv.release(value, round_number),
            self._tensorboard.release(value, round_number),
        )

    def release_round(self, round_number: int, record: Mapping[str, Any],
                      declarations: Mapping[str, Mapping[str, float]] | None = None) -> None:
        """Writes one round. A failed write (disk full, permissions) is reported and the plan
        goes on: these files are a view for people, the checkpoint and run report are the
        record. The coordinator calls this before it checkpoints the round, so a crash in
        between re-runs the round and this call replaces the row."""
        value = release_value(record, declarations or {})
        try:
            asyncio.run(self._release(value, round_number))
        except (OSError, tf.errors.OpError) as error:
            message = f"round {round_number}: metrics not written to {self.directory}: {error}"
            log.warning(message)
            if self._warn is not None:
                self._warn(message)
