"""The dataset policy: what the hospital lets training see of one registered dataset.

A data steward writes it as YAML next to the export. It lists the features training may
use (and the transforms allowed for each), the label, how each HIPAA Safe Harbor identifier
column is handled, how train/test subsets are formed, and, for DICOM folders, the Annex E
retain-options and the labels table. Unknown keys are refused so that a typo never silently
weakens the policy.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from silo_node.datasets.errors import NonPrivatePreprocessing, PolicyInvalid

if TYPE_CHECKING:
    from healthfed_common.plan import Plan

Transform = Literal["standardize", "identity", "one_hot", "year"]
NUMERIC_TRANSFORMS: frozenset[str] = frozenset({"standardize", "identity"})

# How an identifier column is handled. `drop`: removed at ingestion. The others generalise
# it in place, following 45 CFR 164.514(b)(2): `year` keeps only the year of a date;
# `shift_days` moves every date of one patient by the same secret offset (needs
# `patient_key`); `age_90` folds ages above 89 into 90; `zip3` keeps the first three ZIP
# digits and turns the restricted low-population areas into 000.
IdentifierAction = Literal["drop", "year", "shift_days", "age_90", "zip3"]

# PS3.15 Annex E retain-options this silo implements (Table E.1-1 option columns).
RetainOption = Literal[
    "patient_characteristics",
    "device_identity",
    "institution_identity",
    "uids",
    "longitudinal_full_dates",
    "longitudinal_modified_dates",
]

ColumnName = Annotated[str, Field(min_length=1, max_length=128)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeaturePolicy(_Strict):
    """One column training may use. `categories` (one_hot) is the closed list of values
    kept; anything else is stored as missing. `buckets` (ascending edges) replaces a number
    by its bucket index at ingestion; `clip` bounds a number before storage.

    `bounds` and `impute` are PUBLIC values the data steward declares (e.g. a clinical value
    range from the literature, never computed from these records). Under a DP plan they
    replace every statistic of the private records: a `standardize` feature is clamped to
    `bounds` and scaled to [-1, 1] by (x - centre) / half-range, and a missing value becomes
    `impute` (default: the centre of `bounds`). Non-DP plans keep train-set standardisation."""

    transforms: tuple[Transform, ...] = Field(min_length=1)
    categories: tuple[str, ...] | None = None
    buckets: tuple[float, ...] | None = None
    clip: tuple[float, float] | None = None
    bounds: tuple[float, float] | None = Field(
        default=None,
        description="Public value range [low, high] (e.g. clinical limits), used under DP plans to "
        "clamp and scale this feature instead of the records' own mean and std.",
    )
    impute: float | None = Field(
        default=None,
        description="Public value that replaces a missing value under DP plans (default: the centre "
        "of `bounds`, else 0) instead of the records' own mean.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> "FeaturePolicy":
        if self.buckets is not None and list(self.buckets) != sorted(set(self.buckets)):
            raise ValueError("buckets must be strictly ascending")
        if self.clip is not None and self.clip[0] > self.clip[1]:
            raise ValueError("clip must be [low, high] with low <= high")
        if (self.buckets or self.clip) and not NUMERIC_TRANSFORMS & set(self.transforms):
            raise ValueError("buckets/clip apply only to numeric transforms")
        if self.bounds is not None:
            low, high = self.bounds
            if not (math.isfinite(low) and math.isfinite(high) and low < high):
                raise ValueError("bounds must be [low, high] with finite low < high")
        if (self.bounds is not None or self.impute is not None) and not (
            {"standardize", "identity", "year"} & set(self.transforms)
        ):
            raise ValueError("bounds/impute apply only to numeric or year transforms")
        if self.impute is not None:
            if not math.isfinite(self.impute):
                raise ValueError("impute must be a finite number")
            if self.bounds is not None and not self.bounds[0] <= self.impute <= self.bounds[1]:
                raise ValueError("impute must lie within bounds")
        return self

    @property
    def public_impute(self) -> float:
        """The public value a missing number takes under a DP plan."""
        if self.impute is not None:
            return self.impute
        if self.bounds is not None:
            return 0.5 * (self.bounds[0] + self.bounds[1])
        return 0.0

    @property
    def numeric(self) -> bool:
        """Stored as a number (True) or as a category string (False)."""
        return "one_hot" not in self.transforms and "year" not in self.transforms


class SplitPolicy(_Strict):
    """If the export has `column` (values train/test) it decides the subsets; otherwise a
    deterministic stratified holdout of `holdout_fraction`, seeded by the content hash."""

    column: ColumnName = "split"
    holdout_fraction: float = Field(default=0.2, gt=0, lt=1)


class DicomPolicy(_Strict):
    """How a DICOM folder is read. `labels` is a CSV (path relative to the folder, or
    absolute) mapping each file (relative path, or its original SOP Instance UID) to a
    label; only `file_column`, `label_column` and the split column are read from it.

    Every stored instance is de-identified by the PS3.15 Annex E Basic Profile (revision
    2024b) with the `retain` options chosen, and beyond the table: the 128-byte preamble is
    zeroed; private attributes, curves and overlays, public attributes this silo's dictionary
    cannot name, and text, dates or sequences in the patient's group (0010) the table does not
    list are removed; instance UIDs the table does not list are replaced like the ones it does
    (a UID of the standard itself, such as a SOP class, is kept); bits above BitsStored in
    uncompressed pixel data (a retired place for overlays) are cleared; the longitudinal date
    options never keep or shift the patient's birth date or time. Not covered: identifiers drawn into the pixels (an instance marked BurnedInAnnotation or
    RecognizableVisualFeatures YES is quarantined; one not so marked is trusted) and free text
    in attributes the table keeps."""

    labels: str = "labels.csv"
    file_column: ColumnName = "file"
    label_column: ColumnName = "label"
    retain: tuple[RetainOption, ...] = ()
    on_reject: Literal["fail", "skip"] = Field(
        default="fail",
        description="fail: one unusable instance refuses the whole folder; skip: it is "
        "left out and listed in the ingestion report.",
    )
    image_size: int = Field(default=64, ge=8, le=512, description="stored pixel grid side")

    @model_validator(mode="after")
    def _options_compatible(self) -> "DicomPolicy":
        if {"longitudinal_full_dates", "longitudinal_modified_dates"} <= set(self.retain):
            raise ValueError("choose one of longitudinal_full_dates / longitudinal_modified_dates")
        return self


class DatasetPolicy(_Strict):
    """Everything the silo needs to register one dataset and to judge plans against it."""

    features: dict[ColumnName, FeaturePolicy] = Field(min_length=1)
    label: ColumnName
    identifiers: dict[ColumnName, IdentifierAction] = Field(
        default={},
        description="Column -> how that HIPAA Safe Harbor identifier is handled. `drop`: removed at "
        "ingestion. `year`: a date keeps only its year. `shift_days`: every date of one patient moves "
        "by the same secret offset (needs `patient_key`; usable only with transform year). `age_90`: "
        "ages above 89 become 90. `zip3`: the first three ZIP digits, 000 for the restricted "
        "low-population areas (usable only with one_hot). Registration refuses an export with a "
        "detected identifier column not listed here.",
    )
    patient_key: ColumnName | None = Field(
        default=None,
        description="Column identifying the patient, used only to derive per-patient date "
        "shifts; it must itself be dropped.",
    )
    missing_values: tuple[str, ...] = ("", "NA", "N/A", "NaN", "nan", "null", "NULL", "?")
    encoding: str | None = Field(
        default=None,
        description="Text encoding of a CSV export (e.g. utf-8, cp1252, latin-1). Unset: detected "
        "(UTF-8 with or without BOM, UTF-16 with BOM, else cp1252, else latin-1) and shown in the report.",
    )
    delimiter: str | None = Field(
        default=None, min_length=1, max_length=1,
        description="Field separator of a CSV export (`,` `;` tab `|`). Unset: sniffed from the "
        "first lines and shown in the report.",
    )
    sheet: str | None = Field(
        default=None, min_length=1,
        description="Worksheet of an Excel (.xlsx) export holding the records. Unset: the workbook's only "
        "sheet; a workbook with several sheets is refused (SHEET_NOT_DECLARED), naming them.",
    )
    split: SplitPolicy = SplitPolicy()
    dicom: DicomPolicy | None = None

    @model_validator(mode="after")
    def _consistent(self) -> "DatasetPolicy":
        for column, action in self.identifiers.items():
            if action == "drop" and (column in self.features or column == self.label):
                raise ValueError(f"column {column!r} is both dropped and allowed for training")
        if "shift_days" in self.identifiers.values():
            if self.patient_key is None:
                raise ValueError("shift_days needs patient_key (the column naming the patient)")
        if self.patient_key is not None and self.identifiers.get(self.patient_key) != "drop":
            raise ValueError(f"patient_key {self.patient_key!r} must also be listed as drop")
        if self.label in self.features:
            raise ValueError(f"label {self.label!r} is also listed as a feature")
        for column, feature in self.features.items():
            handling = self.identifiers.get(column)
            if handling == "shift_days" and set(feature.transforms) != {"year"}:
                raise ValueError(f"{column!r}: a shifted date can only be used with transform year")
            if handling == "zip3" and set(feature.transforms) != {"one_hot"}:
                raise ValueError(f"{column!r}: a 3-digit ZIP can only be used with one_hot")
        return self

    @classmethod
    def default_dicom(cls) -> "DatasetPolicy":
        """The policy used for a DICOM folder registered without a policy file: Annex E
        Basic Profile with no retain-options, labels.csv with columns file,label."""
        return cls(
            features={"image": FeaturePolicy(transforms=("identity",))},
            label="label",
            dicom=DicomPolicy(),
        )

    @classmethod
    def from_yaml(cls, path: Path) -> "DatasetPolicy":
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            raise PolicyInvalid(f"{path}: cannot read policy: {type(error).__name__}") from None
        return cls.from_document(document, source=str(path))

    @classmethod
    def from_document(cls, document: object, *, source: str = "policy") -> "DatasetPolicy":
        if not isinstance(document, dict):
            raise PolicyInvalid(f"{source}: a policy is a mapping of keys to values")
        try:
            return cls.model_validate(document)
        except ValidationError as error:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '<root>'}: {e['msg']}" for e in error.errors()
            )
            raise PolicyInvalid(f"{source}: {problems}") from None


def check_private_preprocessing(plan: "Plan", policy: DatasetPolicy) -> None:
    """Refuses (NON_PRIVATE_PREPROCESSING) a plan with public-bounds preprocessing (every DP
    plan, and a non-DP plan that asks for `preprocessing: public_bounds`) whose features would
    be transformed with a statistic of the private records; passes every other plan.

    Why: DP-SGD's sensitivity is the clipping bound C only if one record's change moves only
    that record's gradient. Train-set standardisation or mean imputation moves EVERY record's
    features when one record changes (one chol = 9999 record shifts the others' clipped
    gradient sum by 15x C), so under DP the silo uses only the policy's public `bounds` and
    `impute` values. Checked with the plan's features before any data is read or charged."""
    if not plan.uses_public_bounds:
        return
    kind = "a differentially private plan" if plan.dp is not None else "a plan with public_bounds preprocessing"
    for spec in plan.features:
        if spec.standardize_indicators:
            raise NonPrivatePreprocessing(
                f"feature {spec.name!r}: standardize_indicators scales with this dataset's own mean and "
                f"spread, which {kind} cannot use; plan it without standardize_indicators", spec.name)
        if spec.transform == "standardize":
            allowed = policy.features.get(spec.name)
            if allowed is None or allowed.bounds is None:
                raise NonPrivatePreprocessing(
                    f"feature {spec.name!r}: {kind} can standardise only with public "
                    "bounds, and this dataset's policy declares none for it (add `bounds: [low, high]` with "
                    "a published value range, or plan the feature with transform identity)", spec.name)
