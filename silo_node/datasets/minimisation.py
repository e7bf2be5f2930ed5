"""Minimisation: the only columns a dataset keeps are the ones its policy allows.

At ingestion every column of the export is either kept (an allowed feature, the label, the
split column), generalised (a Safe Harbor identifier the policy generalises and allows), or
dropped with a reason. What is stored is therefore already the training view's universe: a
plan cannot reach a column that was never stored. `check_plan` is the second gate, applied
to every plan before any data is read.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
import pandas as pd

from healthfed_common.plan import Plan
from silo_node.datasets.errors import FeatureNotAllowed, IdentifierNotHandled, PolicyInvalid
from silo_node.datasets.policy import NUMERIC_TRANSFORMS, DatasetPolicy, FeaturePolicy, check_private_preprocessing
from silo_node.datasets.tabular_reader import RawTable
from silo_node.deid import generalise
from silo_node.deid.safe_harbor import Finding, detect
from typing import Any

SPLIT_COLUMN = "_split"  # stored name; plan identifiers cannot start with "_"


@dataclass(frozen=True)
class ColumnOutcome:
    column: str
    action: str  # "kept", "generalised" or "dropped"
    reason: str


def canonical_text(values: pd.Series[Any]) -> pd.Series[Any]:
    """Cells as comparable text: whole numbers print without a fraction ('1.0' -> '1'), so
    categories and labels match however the export wrote them; leading zeros ('021') stay."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        numbers = values.astype("float64")
        return numbers.map(
            lambda v: None if pd.isna(v) else (str(int(v)) if np.isfinite(v) and v == round(v) else repr(float(v)))
        ).astype("string")
    text = values.astype("string").str.strip()
    return text.str.replace(r"^([-+]?\d+)\.0+$", r"\1", regex=True)


def check_plan(plan: Plan, policy: DatasetPolicy) -> None:
    """Raises FeatureNotAllowed naming the first plan feature, transform, category or label
    that the dataset's policy does not allow, or (its subclass NonPrivatePreprocessing) a DP
    plan feature that would need a statistic of the private records."""
    if plan.label.name != policy.label:
        raise FeatureNotAllowed(
            f"label {plan.label.name!r} is not this dataset's label ({policy.label!r})", plan.label.name
        )
    for spec in plan.features:
        allowed = policy.features.get(spec.name)
        if allowed is None:
            raise FeatureNotAllowed(f"feature {spec.name!r} is not in the dataset's allow-list", spec.name)
        if spec.transform not in allowed.transforms:
            raise FeatureNotAllowed(
                f"feature {spec.name!r}: transform {spec.transform!r} is not allowed "
                f"(allowed: {', '.join(allowed.transforms)})", spec.name,
            )
        if spec.categories is not None and allowed.categories is not None:
            extra = sorted(set(spec.categories) - set(allowed.categories))
            if extra:
                raise FeatureNotAllowed(
                    f"feature {spec.name!r}: {len(extra)} requested categories are not in the allow-list", spec.name
                )
    check_private_preprocessing(plan, policy)


def _numeric(values: pd.Series[Any], column: str, feature: FeaturePolicy, where: generalise.CellLocator) -> pd.Series[Any]:
    numbers = pd.to_numeric(values if values.dtype.kind in "biuf" else values.astype("string"), errors="coerce")
    bad = values.notna() & numbers.isna()
    if bad.any():
        raise where.error("not a number", column, int(np.flatnonzero(bad.to_numpy())[0]), "MALFORMED_TYPE")
    numbers = numbers.astype("float64")
    if feature.clip is not None:
        numbers = numbers.clip(*feature.clip)
    if feature.buckets is not None:
        buckets = np.digitize(numbers.to_numpy(), np.asarray(feature.buckets)).astype("float64")
        numbers = pd.Series(np.where(numbers.isna(), np.nan, buckets), index=numbers.index)
    return numbers


def _unhandled(findings: list[Finding], handled: dict[str, str]) -> None:
    missing = [f for f in findings if f.column not in handled]
    if missing:
        listing = ", ".join(f"{f.column!r} ({f.kind}, by {f.how})" for f in missing)
        raise IdentifierNotHandled(
            f"{len(missing)} column(s) carry HIPAA Safe Harbor identifiers the policy neither "
            f"drops nor generalises: {listing}. Add each under `identifiers:` in the policy.",
            [(f.column, f.kind, f.how) for f in missing],
        )


HOLDOUT_KEY = b"healthfed/holdout/v2"
"""Public key of the per-record holdout draw (the split is not secret; it must only not depend on
any other record)."""


def holdout(record_digests: Sequence[bytes], fraction: float) -> NDArray[Any]:
    """Per-record holdout: a record is in test when HMAC-SHA256(HOLDOUT_KEY, its own digest),
    read as a number in [0, 1), is below `fraction`.

    Why per record: the split is preprocessing too. A split seeded by the whole file (or
    stratified by counts) moves OTHER records between train and test when one record is added
    or replaced, so the training set -- and every DP release from it -- would depend on more
    than the changed record. Here each record's side depends on that record alone, so a
    replace-one neighbour changes at most that record's side. The test fraction is `fraction`
    in expectation, not exactly."""
    split = np.full(len(record_digests), "train", dtype=object)
    scale = float(1 << 64)
    for index, digest in enumerate(record_digests):
        draw = int.from_bytes(hmac.new(HOLDOUT_KEY, digest, hashlib.sha256).digest()[:8], "big") / scale
        if draw < fraction:
            split[index] = "test"
    return split


def row_digests(table: pd.DataFrame) -> list[bytes]:
    """SHA-256 of each stored row's values (column names and canonical text, in column order)."""
    columns = list(table.columns)
    digests = []
    for values in table.itertuples(index=False, name=None):
        text = "\x1f".join(f"{c}\x1e{'' if pd.isna(v) else v}" for c, v in zip(columns, values))
        digests.append(hashlib.sha256(text.encode("utf-8")).digest())
    return digests


def minimise_table(
    raw: RawTable, policy: DatasetPolicy | None, *, file: Path, secret: bytes, content_sha256: str
) -> tuple[pd.DataFrame, list[ColumnOutcome], list[Finding]]:
    """The frame to store (allowed columns only, identifiers generalised), what happened to
    each column, and the identifiers found. Refuses the export when an identifier is not
    handled, or when no policy says what training may use."""
    frame = raw.frame
    findings = detect(frame)
    _unhandled(findings, dict(policy.identifiers) if policy else {})
    if policy is None:
        raise PolicyInvalid("a tabular dataset needs a policy naming its allowed features and label (--policy FILE)")
    for needed in [*policy.features, policy.label, *([policy.patient_key] if policy.patient_key else [])]:
        if needed not in frame.columns:
            raise PolicyInvalid(f"column {needed!r} named by the policy is not in {file.name}")
    where = generalise.CellLocator(str(file), raw.row_numbers)
    kinds = {f.column: f.kind for f in findings}
    allowed = set(policy.features) | {policy.label}
    stored: dict[str, pd.Series[Any]] = {}
    outcomes: list[ColumnOutcome] = []
    patients = frame[policy.patient_key].astype("string") if policy.patient_key else None
    for column in frame.columns:
        action = policy.identifiers.get(column)
        kind = kinds.get(column, "declared by policy")
        values = frame[column]
        if action == "drop":
            outcomes.append(ColumnOutcome(column, "dropped", f"identifier ({kind}): dropped by policy"))
            continue
        if action is not None:
            if action == "year":
                values = generalise.to_year(values, column, where)
            elif action == "shift_days":
                assert patients is not None  # guaranteed by the policy validator
                values = generalise.shift_dates(values, patients, secret, column, where)
            elif action == "age_90":
                values = generalise.cap_age(values, column, where)
            else:
                values = generalise.zip3(values, column, where)
            if column not in allowed:
                outcomes.append(ColumnOutcome(column, "dropped", f"identifier ({kind}): generalised ({action}) but not in the allow-list"))
                continue
            outcomes.append(ColumnOutcome(column, "generalised", f"identifier ({kind}): {action}"))
        elif column == policy.split.column and column not in allowed:
            continue  # becomes the stored split below
        elif column not in allowed:
            outcomes.append(ColumnOutcome(column, "dropped", "not in the minimisation allow-list"))
            continue
        else:
            outcomes.append(ColumnOutcome(column, "kept", "label" if column == policy.label else "allowed feature"))
        if column == policy.label:
            stored[column] = canonical_text(values)
            continue
        feature = policy.features[column]
        if NUMERIC_TRANSFORMS & set(feature.transforms) and feature.numeric:
            stored[column] = _numeric(values, column, feature, where)
        else:
            text = canonical_text(values)
            if feature.categories is not None:
                text = text.where(text.isin(feature.categories) | text.isna(), None)
            stored[column] = text
    table = pd.DataFrame(stored, index=frame.index)
    if policy.split.column in frame.columns:
        split = frame[policy.split.column].astype("string").str.strip().str.lower()
        bad = ~split.isin(["train", "test"])
        if bad.any():
            raise where.error("split must be 'train' or 'test'", policy.split.column, int(np.flatnonzero(bad.to_numpy())[0]), "MALFORMED_TYPE")
        table[SPLIT_COLUMN] = split.astype(str).to_numpy()
        outcomes.append(ColumnOutcome(policy.split.column, "kept", "train/test split"))
    else:
        table[SPLIT_COLUMN] = holdout(row_digests(table), policy.split.holdout_fraction)
    return table.reset_index(drop=True), outcomes, findings
