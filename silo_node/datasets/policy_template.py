"""A starting dataset policy proposed from an export, for the data steward to review.

It reads the export exactly as registration will (same encoding and delimiter detection),
runs the same Safe Harbor detection (`silo_node.deid.safe_harbor.detect`) and proposes, per
column: identifiers `drop` (ages over 89 `age_90`), with the generalising alternatives in a
comment; numbers as features (standardize/identity); short categorical columns as one_hot
with their categories; free text left out. The result is a commented YAML that
`DatasetPolicy` accepts as written, so `silo-node data add` with it succeeds unless the
steward tightens it. Comments carry counts and column names only, never cell values;
category lists are the one place values appear, as they must in any one_hot policy.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml

from silo_node.datasets.errors import DataLayerError, MalformedInput, PolicyInvalid
from silo_node.datasets.policy import DatasetPolicy
from silo_node.datasets.report import describe_dialect
from silo_node.datasets.tabular_reader import RawTable, read_table
from silo_node.deid.safe_harbor import Finding, detect, looks_like_a_name
from typing import Any

MAX_CATEGORIES = 20
_LABEL_NAMES = re.compile(r"^(outcome|label|target|y|class|diagnosis|result|num|death|mortality|readmitted)$", re.I)
_ALTERNATIVES = {
    "date": "or `year` (keep only the year; list it under features with transform year), or `shift_days` "
            "(needs patient_key; keeps intervals)",
    "geographic": "or `zip3` for a ZIP code (first three digits; list it under features with transform one_hot)",
    "mrn": "the patient's id: name it as patient_key if you use shift_days",
}


class TemplateExists(DataLayerError, FileExistsError):
    """The output file exists; a template never overwrites a policy someone may have edited."""

    code = "POLICY_EXISTS"


@dataclass(frozen=True)
class Template:
    text: str
    policy: DatasetPolicy
    identifiers: int
    features: int


def _q(value: str) -> str:
    """A YAML scalar (JSON strings are valid YAML)."""
    return json.dumps(value, ensure_ascii=False)


def _numeric(values: pd.Series[Any]) -> bool:
    present = values.dropna()
    if present.empty:
        return False
    if pd.api.types.is_numeric_dtype(present) and not pd.api.types.is_bool_dtype(present):
        return True
    return bool(pd.to_numeric(present.astype("string"), errors="coerce").notna().all())


def _categories(values: pd.Series[Any]) -> list[str]:
    text = values.dropna().astype("string").str.strip()
    text = text.str.replace(r"^([-+]?\d+)\.0+$", r"\1", regex=True)  # as registration compares them
    return sorted(set(text) - {""})


def _guess_label(frame: pd.DataFrame, candidates: list[str]) -> str | None:
    for column in candidates:
        if _LABEL_NAMES.match(column):
            return column
    binary = [c for c in candidates if len(_categories(frame[c])) == 2]
    return binary[-1] if binary else None


def propose(raw: RawTable, source: Path, label: str | None = None) -> Template:
    """The commented policy text for this export, validated by DatasetPolicy."""
    frame = raw.frame
    findings: dict[str, Finding] = {f.column: f for f in detect(frame)}
    columns = [str(c) for c in frame.columns]
    if label is not None and label not in columns:
        raise PolicyInvalid(f"--label {label!r} is not a column of {source.name} ({', '.join(columns)})")
    split_column = "split" if "split" in columns and set(_categories(frame["split"])) <= {"train", "test"} else None
    plain = [c for c in columns if c not in findings and c != split_column]
    given = label is not None
    label = label or _guess_label(frame, plain)
    lines = [
        f"# Dataset policy proposed by `silo-node data policy-template` from {source.name}",
        f"# ({len(frame)} records, {len(columns)} columns; read as {describe_dialect(raw.dialect)}).",
        "# REVIEW EVERY LINE before `silo-node data add`: this file decides what training may see.",
        "# Identifier actions: drop | year | shift_days | age_90 | zip3 (README: dataset policy reference).",
    ]
    if raw.dialect.get("format") == "csv":
        lines += [f"encoding: {_q(raw.dialect['encoding'])}    # {raw.dialect['encoding_source']}",
                  f"delimiter: {_q(raw.dialect['delimiter'])}    # {raw.dialect['delimiter_source']}"]
    if raw.dialect.get("format") == "xlsx":
        lines.append(f"sheet: {_q(raw.dialect['sheet'])}    # {raw.dialect['sheet_source']}")
    if label is None:
        raise PolicyInvalid(f"no label column could be guessed in {source.name}: name it with --label")
    how = "as given" if given else "guessed: check it"
    lines.append(f"label: {_q(label)}    # the outcome column ({how})")
    feature_lines: list[str] = []
    left_out: list[str] = []
    features = 0
    generalised = {f.column for f in findings.values() if f.kind == "age_over_89"}
    for column in columns:
        if column in (label, split_column) or (column in findings and column not in generalised):
            continue
        values = frame[column]
        if _numeric(values):
            feature_lines += [f"  {_q(column)}:", "    transforms: [standardize, identity]",
                              "    # bounds: [low, high]   # a PUBLISHED value range (never computed from these "
                              "records), needed to standardise under DP plans"]
            features += 1
        elif any(looks_like_a_name(value) for value in _categories(values)):
            # a policy leaves the silo (hospitals send it to the coordinator), and a column of a
            # few patients' names escapes content detection: values shaped like full names are
            # never written into it; the steward lists them by hand if they name no one
            left_out.append(f"#   {column}: values shaped like people's full names (not listed: if they name "
                            "no one, e.g. departments, add the column with its categories by hand)")
        elif 0 < len(categories := _categories(values)) <= MAX_CATEGORIES:
            feature_lines += [f"  {_q(column)}:    # {len(categories)} categories",
                              "    transforms: [one_hot]", f"    categories: [{', '.join(map(_q, categories))}]"]
            features += 1
        else:
            left_out.append(f"#   {column}: text with {values.nunique()} distinct values (free text is not a feature)")
    lines.append("features:" if feature_lines else "features: {}    # no usable column found: add features by hand")
    lines += feature_lines
    if left_out:
        lines.append("# Left out (add under features only if training needs them and they are safe):")
        lines += left_out
    if findings:
        lines.append(f"identifiers:    # {len(findings)} column(s) that carry or may carry HIPAA Safe Harbor identifiers")
        for column in columns:
            finding = findings.get(column)
            if finding is None:
                continue
            action = "age_90" if finding.kind == "age_over_89" else "drop"
            note = f"{finding.kind}, detected by {finding.how}"
            if finding.kind in _ALTERNATIVES:
                note += f"; {_ALTERNATIVES[finding.kind]}"
            if action == "age_90":
                note += "; ages above 89 become 90, kept as a feature"
            lines.append(f"  {_q(column)}: {action}    # {note}")
    if split_column:
        lines.append(f"split: {{column: {_q(split_column)}}}    # train/test taken from this column")
    else:
        lines.append("split: {holdout_fraction: 0.2}    # stratified test share, seeded by the file's hash")
    text = "\n".join(lines) + "\n"
    policy = DatasetPolicy.from_document(yaml.safe_load(text), source="proposed policy")
    return Template(text, policy, len(findings), features)


def template_for_export(path: Path, label: str | None = None, *, encoding: str | None = None,
                        delimiter: str | None = None, sheet: str | None = None) -> Template:
    """Reads the export as registration would and proposes its policy."""
    if not path.is_file():
        raise MalformedInput("expected a CSV, Parquet or .xlsx file", file=path, code="MALFORMED_NOT_A_FILE")
    missing = DatasetPolicy.model_fields["missing_values"].default
    raw = read_table(path, path.read_bytes(), encoding=encoding, missing_values=missing, delimiter=delimiter,
                     sheet=sheet)
    return propose(raw, path, label)


def write_template(path: Path, text: str, *, force: bool = False) -> None:
    """Atomically (temporary file + rename); refuses to replace an existing file unless forced."""
    if path.exists() and not force:
        raise TemplateExists(f"{path} exists; choose another --out or pass --force")
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    temporary.replace(path)
