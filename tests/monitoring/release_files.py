"""Reads back the files `aggregator.metrics_release` writes, as a coordinator's tools would:
the CSV with the csv module, the TensorBoard events with TF's own event reader."""

from __future__ import annotations

import csv
from pathlib import Path

import tensorflow as tf


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def read_scalars(logdir: Path) -> dict[str, dict[int, list[float]]]:
    """tag -> step -> every value written at that step, over all event files in the logdir
    (a resumed plan adds a second file)."""
    scalars: dict[str, dict[int, list[float]]] = {}
    for events in sorted(logdir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(events)):
            for value in event.summary.value:
                number = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
                scalars.setdefault(value.tag, {}).setdefault(event.step, []).append(number)
    return scalars
