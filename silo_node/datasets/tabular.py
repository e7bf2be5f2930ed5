"""Registering a tabular export: read, detect identifiers, minimise, write the stored copy."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from silo_node.datasets.errors import MalformedInput
from silo_node.datasets.minimisation import SPLIT_COLUMN, minimise_table
from silo_node.datasets.policy import DatasetPolicy
from silo_node.datasets.report import IngestionReport
from silo_node.datasets.tabular_reader import read_table

RECORDS_FILE = "records.parquet"


@dataclass(frozen=True)
class Ingested:
    """What an ingester hands the registry: the report and the facts it records."""

    report: IngestionReport
    schema: dict[str, str]
    stored_sha256: str


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ingest_tabular(name: str, path: Path, policy: DatasetPolicy | None, staging: Path, secret: bytes) -> Ingested:
    if not path.is_file():
        raise MalformedInput("expected a CSV, Parquet or .xlsx file", file=path, code="MALFORMED_NOT_A_FILE")
    data = path.read_bytes()
    content_sha256 = hashlib.sha256(data).hexdigest()
    encoding = policy.encoding if policy else None
    delimiter = policy.delimiter if policy else None
    missing = policy.missing_values if policy else DatasetPolicy.model_fields["missing_values"].default
    raw = read_table(path, data, encoding=encoding, missing_values=missing, delimiter=delimiter,
                     sheet=policy.sheet if policy else None)
    del data
    table, outcomes, findings = minimise_table(raw, policy, file=path, secret=secret, content_sha256=content_sha256)
    stored = staging / RECORDS_FILE
    table.to_parquet(stored, index=False)
    split = table[SPLIT_COLUMN]
    assert policy is not None  # minimise_table refuses a missing policy
    report = IngestionReport(
        name=name,
        kind="tabular",
        source=str(path),
        content_sha256=content_sha256,
        records_in=len(raw.frame),
        records_kept=len(table),
        n_train=int((split == "train").sum()),
        n_test=int((split == "test").sum()),
        columns=[{"column": o.column, "action": o.action, "reason": o.reason} for o in outcomes],
        identifiers=[{"where": f.column, "kind": f.kind, "how": f.how} for f in findings],
        notes=[f"format {raw.file_format}; split from column {policy.split.column!r}"
               if policy.split.column in raw.frame.columns else
               f"format {raw.file_format}; stratified holdout {policy.split.holdout_fraction} seeded by content hash"],
        dialect=dict(raw.dialect),
    )
    schema = {column: ("number" if pd.api.types.is_numeric_dtype(table[column]) else "text") for column in table.columns}
    return Ingested(report, schema, file_sha256(stored))
