"""The dataset registry: one row per registered dataset in the silo database, one folder per
dataset under the store directory holding only the minimised / de-identified copy.

Registration is all or nothing: the copy is built in a staging folder, then the database row
is inserted and the folder renamed into place inside one transaction; any failure removes
both. The original export is never read again after `add` returns.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import sqlite3
import time
import uuid
from silo_node.audit_sink import AuditSink
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, Protocol

import pandas as pd

from healthfed_common.canonical_json import canonical_json
from healthfed_common.plan import Plan
from silo_node.datasets.errors import (
    AuditWriteFailed, DataLayerError, DatasetExists, DatasetNotFound, FeatureNotAllowed, PolicyInvalid,
)
from silo_node.datasets.minimisation import SPLIT_COLUMN, check_plan
from silo_node.datasets.policy import DatasetPolicy
from silo_node.datasets.report import IngestionReport
from silo_node.datasets.tabular import RECORDS_FILE, Ingested, ingest_tabular
from silo_node.datasets.view import TrainingView, tabular_view
from silo_node.deid.secret import load_or_create_secret

DATASET_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.\-]{0,63}$")
SECRET_FILE = "deid-secret.key"
STAGING_LOCK = ".in-use"
ABANDONED_UNLOCKED_S = 3600  # a staging folder without its lock file is left this long (it may be starting)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (
    name            TEXT PRIMARY KEY,
    kind            TEXT NOT NULL CHECK (kind IN ('tabular', 'dicom')),
    content_sha256  TEXT NOT NULL,
    stored_sha256   TEXT NOT NULL,
    n_records       INTEGER NOT NULL,
    n_train         INTEGER NOT NULL,
    n_test          INTEGER NOT NULL,
    schema_json     TEXT NOT NULL,
    policy_json     TEXT NOT NULL,
    report_json     TEXT NOT NULL,
    source          TEXT NOT NULL,
    registered_at   TEXT NOT NULL,
    registered_by   TEXT NOT NULL
)
"""




@dataclass(frozen=True)
class DatasetInfo:
    name: str
    kind: str
    content_sha256: str
    stored_sha256: str
    n_records: int
    n_train: int
    n_test: int
    schema: dict[str, str]
    policy: DatasetPolicy
    report: IngestionReport
    source: str
    registered_at: str
    registered_by: str

    def __str__(self) -> str:
        allowed = ", ".join(f"{name} ({'/'.join(f.transforms)})" for name, f in self.policy.features.items())
        return "\n".join([
            f"{self.name}: {self.kind}, {self.n_records} records ({self.n_train} train / {self.n_test} test)",
            f"  registered {self.registered_at} by {self.registered_by} from {self.source}",
            f"  content sha256 {self.content_sha256}",
            f"  stored  sha256 {self.stored_sha256}",
            f"  label: {self.policy.label}",
            f"  allowed features: {allowed}",
            f"  stored columns: {', '.join(c for c in self.schema if c != SPLIT_COLUMN)}",
        ])


def policy_digest(policy: DatasetPolicy) -> str:
    """SHA-256 of the policy's canonical JSON: names exactly which rules de-identified a
    dataset, so an auditor can match a registration to the policy file that governed it."""
    return hashlib.sha256(canonical_json(policy.model_dump(mode="json"))).hexdigest()


def deidentification_summary(report: IngestionReport) -> dict[str, list[str]]:
    """Which columns registration dropped and which it generalised, by name (no values)."""
    return {
        "dropped": sorted(c["column"] for c in report.columns if c["action"] == "dropped"),
        "generalised": sorted(c["column"] for c in report.columns if c["action"] == "generalised"),
    }


class DatasetRegistry:
    """Registers, lists and removes datasets and builds training views of them."""

    def __init__(
        self, conn: sqlite3.Connection, store_dir: Path, *, secret: bytes | None = None,
        audit: AuditSink | None = None,
    ) -> None:
        self._conn = conn
        self._store = Path(store_dir)
        self._store.mkdir(parents=True, exist_ok=True)
        self._secret = secret if secret is not None else load_or_create_secret(self._store / SECRET_FILE)
        self._audit = audit
        conn.execute(_SCHEMA)
        self._remove_abandoned_staging()

    def _claim_staging(self, name: str) -> tuple[Path, int]:
        """A new staging folder and an open descriptor holding the lock that marks it in use."""
        staging = self._store / f".staging-{name}-{uuid.uuid4().hex}"
        staging.mkdir()
        # locked under another name first, so a cleanup never finds the marker unlocked
        claim = os.open(staging / f"{STAGING_LOCK}.new", os.O_CREAT | os.O_RDWR, 0o600)
        fcntl.flock(claim, fcntl.LOCK_EX)
        os.rename(staging / f"{STAGING_LOCK}.new", staging / STAGING_LOCK)
        return staging, claim

    def _remove_abandoned_staging(self) -> None:
        """Deletes staging folders no registration holds: a `data add` killed mid-ingestion
        leaves one, holding de-identified copies no dataset row owns and nothing else would
        ever remove. A folder whose lock is held belongs to a registration still running."""
        for folder in self._store.glob(".staging-*"):
            try:
                claim = os.open(folder / STAGING_LOCK, os.O_RDWR)
            except FileNotFoundError:  # killed before it took its lock, still taking it, or just removed
                try:
                    abandoned = time.time() - folder.stat().st_mtime > ABANDONED_UNLOCKED_S
                except OSError:
                    continue  # another process's cleanup removed it first
                if abandoned:
                    shutil.rmtree(folder, ignore_errors=True)
                continue
            except OSError:
                continue
            try:
                fcntl.flock(claim, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            else:
                shutil.rmtree(folder, ignore_errors=True)
            finally:
                os.close(claim)

    # -- registration -------------------------------------------------------------------
    def add(
        self, name: str, path: Path, kind: Literal["tabular", "dicom"], policy: DatasetPolicy | None = None,
        *, actor: str = "silo-node",
    ) -> IngestionReport:
        """Registers `path` as dataset `name`, refusing it (and leaving nothing behind) when
        identifiers are not handled, the input is malformed, or the policy does not fit."""
        try:
            self._check_new(name, kind)
            staging, claim = self._claim_staging(name)
            try:
                ingested = self._ingest(name, Path(path), kind, policy, staging)
                report = ingested.report
                policy_sha256 = policy_digest(policy or DatasetPolicy.default_dicom())
                summary = deidentification_summary(report)

                def audit() -> None:  # inside the registration's transaction: no entry, no dataset
                    self._audited("dataset.deidentified", actor, name, {
                        "identifiers": len(report.identifiers),
                        "kinds": sorted({i["kind"] for i in report.identifiers}),
                        "dropped_columns": len(summary["dropped"]),
                        "instances": report.instances,
                        "policy_sha256": policy_sha256,
                        **summary,
                    })
                    self._audited("dataset.registered", actor, name, {
                        "kind": kind, "content_sha256": report.content_sha256, "records": report.records_kept,
                        "policy_sha256": policy_sha256, **summary,
                    })

                self._commit(name, kind, policy, ingested, staging, self._store / name, actor, audit)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
                os.close(claim)
        except DataLayerError as error:
            try:
                self._emit("dataset.registered", actor, "minor_failure", name, {"code": error.code})
            except Exception:  # noqa: BLE001 - the log that just refused an entry may refuse this one too
                if not isinstance(error, AuditWriteFailed):
                    raise
            raise
        return report

    def _check_new(self, name: str, kind: str) -> None:
        if not DATASET_NAME.match(name):
            raise PolicyInvalid(f"dataset name {name!r}: use letters, digits, '_', '.', '-' (max 64), starting with a letter")
        if kind not in ("tabular", "dicom"):
            raise PolicyInvalid(f"kind must be 'tabular' or 'dicom', not {kind!r}")
        if self._row(name) is not None:
            raise DatasetExists(f"dataset {name!r} is already registered; remove it first")

    def _ingest(self, name: str, path: Path, kind: str, policy: DatasetPolicy | None, staging: Path) -> Ingested:
        if kind == "tabular":
            return ingest_tabular(name, path, policy, staging, self._secret)
        from silo_node.datasets.dicom_ingest import ingest_dicom  # pydicom only when needed

        return ingest_dicom(name, path, policy or DatasetPolicy.default_dicom(), staging, self._secret)

    def _commit(
        self, name: str, kind: str, policy: DatasetPolicy | None, ingested: Ingested,
        staging: Path, final: Path, actor: str, audit: Callable[[], None],
    ) -> None:
        report = ingested.report
        effective = policy or DatasetPolicy.default_dicom()
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            if self._row(name) is not None:
                raise DatasetExists(f"dataset {name!r} is already registered; remove it first")
            self._conn.execute(
                "INSERT INTO datasets VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (name, kind, report.content_sha256, ingested.stored_sha256, report.records_kept,
                 report.n_train, report.n_test, json.dumps(ingested.schema),
                 effective.model_dump_json(), report.to_json(), report.source,
                 datetime.now(timezone.utc).isoformat(timespec="seconds"), actor),
            )
            if final.exists():  # left by a crash between rename and commit: no row owns it
                shutil.rmtree(final)
            (staging / STAGING_LOCK).unlink(missing_ok=True)  # the marker stays out of the dataset
            staging.rename(final)
            audit()
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            if final.exists() and not staging.exists():
                shutil.rmtree(final, ignore_errors=True)
            raise

    def remove(self, name: str, *, actor: str = "silo-node") -> None:
        """Forgets the dataset and deletes its stored copy (the original export is untouched)."""
        info = self.show(name)
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            self._conn.execute("DELETE FROM datasets WHERE name = ?", (name,))
            self._audited("dataset.removed", actor, name, {  # recorded before anything is deleted
                "kind": info.kind, "content_sha256": info.content_sha256, "records": info.n_records,
                "policy_sha256": policy_digest(info.policy), "registered_by": info.registered_by,
            })
            shutil.rmtree(self._store / name, ignore_errors=True)
            self._conn.execute("COMMIT")
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise

    # -- queries ------------------------------------------------------------------------
    def list(self) -> list[DatasetInfo]:
        rows = self._conn.execute("SELECT * FROM datasets ORDER BY name").fetchall()
        return [self._info(row) for row in rows]

    def show(self, name: str) -> DatasetInfo:
        row = self._row(name)
        if row is None:
            raise DatasetNotFound(f"no dataset named {name!r} is registered")
        return self._info(row)

    def policy(self, name: str) -> DatasetPolicy:
        return self.show(name).policy

    def training_view(self, name: str, plan: Plan, subset: Literal["train", "test"]) -> TrainingView:
        """The plan's features and label for one subset, after checking every requested
        feature, transform and the label against the dataset's allow-list."""
        if subset not in ("train", "test"):
            raise PolicyInvalid(f"subset must be 'train' or 'test', not {subset!r}")
        info = self.show(name)
        check_plan(plan, info.policy)
        folder = self._store / name
        if info.kind == "dicom":
            from silo_node.datasets.dicom_view import image_view

            return image_view(name, folder, plan, subset)
        wanted = [*plan.feature_names, plan.label.name, SPLIT_COLUMN]
        missing = [c for c in wanted if c not in info.schema]
        if missing:
            raise FeatureNotAllowed(f"feature {missing[0]!r} was not stored for this dataset", missing[0])
        frame = pd.read_parquet(folder / RECORDS_FILE, columns=wanted)
        return tabular_view(name, frame, plan, subset, info.policy)

    # -- internals ----------------------------------------------------------------------
    def _row(self, name: str) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._conn.execute("SELECT * FROM datasets WHERE name = ?", (name,)).fetchone()
        return row

    @staticmethod
    def _info(row: tuple[Any, ...]) -> DatasetInfo:
        (name, kind, content, stored, n, n_train, n_test, schema, policy, report, source, at, by) = row
        return DatasetInfo(
            name, kind, content, stored, n, n_train, n_test, json.loads(schema),
            DatasetPolicy.model_validate_json(policy), IngestionReport.from_json(report), source, at, by,
        )

    def _audited(self, kind: str, actor: str, name: str, detail: Mapping[str, Any]) -> None:
        """Record a change's success entry, or refuse the change (the caller rolls it back):
        a dataset is never registered or removed without its audit entry."""
        try:
            self._emit(kind, actor, "success", name, detail)
        except Exception as error:  # noqa: BLE001 - a locked, full or damaged log: the change is refused
            raise AuditWriteFailed(
                f"the audit entry {kind} for dataset {name!r} could not be written ({type(error).__name__}: "
                f"{str(error)[:120]}); the dataset was not {'removed' if kind == 'dataset.removed' else 'registered'}"
            ) from None

    def _emit(self, kind: str, actor: str, outcome: str, name: str, detail: Mapping[str, Any] | None) -> None:
        if self._audit is not None:
            self._audit.record(kind, actor=actor, outcome=outcome, entities={"dataset": name}, detail=detail)
