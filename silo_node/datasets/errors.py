"""One exception tree for the silo's data layer.

Every leaf also subclasses the matching built-in so callers may catch either, and carries a
stable `code`. Codes may be reported to the aggregator; the free-text message never is,
because it may name local files or columns. Messages here never quote cell or tag values:
those could be patient data, and an error text ends up in logs and terminals.
"""

from __future__ import annotations

from pathlib import Path

from silo_node.errors import SiloNodeError


class DataLayerError(SiloNodeError):
    """Root of every error raised by dataset registration, de-identification and views."""

    code = "DATA_LAYER_ERROR"


class AuditWriteFailed(DataLayerError):
    """The audit entry of a dataset change could not be written, so the change was refused
    (rolled back): a dataset is never registered or removed unrecorded."""

    code = "AUDIT_WRITE_FAILED"


class DatasetNotFound(DataLayerError, LookupError):
    """No dataset of that name is registered in this silo."""

    code = "DATASET_NOT_FOUND"


class DatasetExists(DataLayerError, FileExistsError):
    """A dataset of that name is already registered; remove it first."""

    code = "DATASET_EXISTS"


class PolicyInvalid(DataLayerError, ValueError):
    """A dataset policy file does not satisfy the schema or contradicts itself."""

    code = "POLICY_INVALID"


class IdentifierNotHandled(DataLayerError, PermissionError):
    """The export carries HIPAA Safe Harbor identifiers the policy neither drops nor
    generalises. `findings` lists (column, identifier kind, how it was detected)."""

    code = "IDENTIFIER_NOT_HANDLED"

    def __init__(self, message: str, findings: list[tuple[str, str, str]]) -> None:
        super().__init__(message)
        self.findings = findings


class FeatureNotAllowed(DataLayerError, PermissionError):
    """A plan asks for a feature, transform or label outside the dataset's allow-list."""

    code = "FEATURE_NOT_ALLOWED"

    def __init__(self, message: str, feature: str) -> None:
        super().__init__(message)
        self.feature = feature


class MalformedInput(DataLayerError, ValueError):
    """An input file cannot be read as the data it claims to be. Names the file and, where
    known, the row (1-based, counting the header as row 1), column or DICOM tag."""

    code = "MALFORMED_INPUT"

    def __init__(
        self,
        problem: str,
        *,
        file: Path | str,
        row: int | None = None,
        column: str | None = None,
        tag: str | None = None,
        code: str | None = None,
    ) -> None:
        where = [f"file {file}"]
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        if tag is not None:
            where.append(f"tag {tag}")
        super().__init__(f"{', '.join(where)}: {problem}")
        self.file = str(file)
        self.row = row
        self.column = column
        self.tag = tag
        if code is not None:
            self.code = code


def tag_text(tag: int) -> str:
    """A DICOM tag as people write it: (GGGG,EEEE)."""
    return f"({int(tag) >> 16:04X},{int(tag) & 0xFFFF:04X})"


class InstanceRejected(DataLayerError, ValueError):
    """A DICOM instance cannot be used for training; `code` says why (one per reason)."""

    code = "INSTANCE_REJECTED"

    def __init__(self, message: str, *, file: Path | str, code: str) -> None:
        super().__init__(f"file {file}: {message}")
        self.file = str(file)
        self.code = code


class NonPrivatePreprocessing(FeatureNotAllowed):
    """A DP plan would transform the records with a statistic of the private records (a
    `standardize` feature whose policy declares no public `bounds`, or `standardize_indicators`):
    such a statistic moves every record's features when one record changes, so the DP-SGD
    sensitivity would no longer be the clipping bound. Refused before anything is read or charged."""

    code = "NON_PRIVATE_PREPROCESSING"
