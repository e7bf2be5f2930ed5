"""The node's GDPR Art. 30 record of processing activities, read from
`DIR/processing-record.yaml`.

Why a strict schema (unknown keys refused): the record is copied into reports handed to a
supervisory authority; a misspelt key (`recipents:`) must fail loudly, not vanish from the
report. The fields follow Art. 30(1)(a)–(g).

Example::

    controller:
      name: St Mary's Hospital NHS Trust
      contact: dpo@st-marys.example
      dpo_contact: Data Protection Officer, dpo@st-marys.example
    purpose: Federated training of a sepsis early-warning model (research, Art. 9(2)(j))
    data_subject_categories: [adult ICU patients]
    data_categories: [vital signs, laboratory results, age band]
    recipients: [HealthFed aggregator (masked model updates only)]
    retention: Audit records 6 years; model updates are not retained by the silo
    security_measures: [mTLS with federation CA, secure aggregation, record-level DP-SGD]
    transfers: []
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from compliance.errors import ProcessingRecordInvalid, ProcessingRecordMissing

NonEmpty = Field(min_length=1)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Controller(_Strict):
    """Art. 30(1)(a): controller, its representative and data protection officer."""

    name: str = Field(min_length=1)
    contact: str = Field(min_length=1)
    representative: str | None = None
    dpo_contact: str | None = None


class Transfer(_Strict):
    """Art. 30(1)(e): a transfer to a third country or international organisation."""

    destination: str = Field(min_length=1)
    safeguards: str = Field(min_length=1)


class ProcessingRecord(_Strict):
    """Art. 30(1) record of processing for the federated-learning activity of one node."""

    controller: Controller
    purpose: str = Field(min_length=1)
    data_subject_categories: list[str] = Field(min_length=1)
    data_categories: list[str] = Field(min_length=1)
    recipients: list[str]
    retention: str = Field(min_length=1)
    security_measures: list[str] = Field(min_length=1)
    transfers: list[Transfer]


def load_processing_record(path: Path) -> ProcessingRecord:
    """Read and validate the record; errors name the file and every bad field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProcessingRecordMissing(
            f"no GDPR Art. 30 record of processing at {path}; create it (see "
            "`compliance export --help` for the fields)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProcessingRecordInvalid(f"cannot read {path}: {exc}") from None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ProcessingRecordInvalid(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(document, dict):
        raise ProcessingRecordInvalid(f"{path} must hold a mapping of fields, not {type(document).__name__}")
    try:
        return ProcessingRecord.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ProcessingRecordInvalid(f"{path}: {problems}") from None
