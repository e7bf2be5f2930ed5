"""One exception tree for the compliance package.

`ComplianceError` is the root; each leaf also subclasses the built-in a caller would
naturally catch (`ValueError` for bad data, `LookupError` for unknown names,
`PermissionError` for refused trust, `FileNotFoundError` for missing inputs), so code that
does not know this package still handles them sensibly. Each class has a stable `code` for
logs and exit messages; messages name what is wrong and where, never patient data.
"""

from __future__ import annotations

from healthfed_common.errors import HealthFedError


class ComplianceError(HealthFedError):
    """Root of every error raised by the compliance package."""

    code = "COMPLIANCE_ERROR"


class UnknownEventKind(ComplianceError, LookupError):
    """An event kind outside the closed vocabulary of `compliance.events`."""

    code = "UNKNOWN_EVENT_KIND"


class InvalidEvent(ComplianceError, ValueError):
    """An event's fields (outcome, entities, detail) do not satisfy the conventions."""

    code = "INVALID_EVENT"


class InvalidProof(ComplianceError, ValueError):
    """A Merkle inclusion or consistency proof does not verify, or was asked of bad sizes."""

    code = "INVALID_PROOF"


class KeyFileError(ComplianceError, PermissionError):
    """A signing or public key file is unreadable, malformed, or too widely readable."""

    code = "KEY_FILE"


class LogNotFound(ComplianceError, FileNotFoundError):
    """The audit log database (or the node directory holding it) does not exist."""

    code = "LOG_NOT_FOUND"


class LogCorrupt(ComplianceError, ValueError):
    """The audit log file was an audit log but can no longer be read whole (truncated,
    overwritten, damaged pages): a verification failure, not a wrong input."""

    code = "LOG_CORRUPT"


class SigningKeyMismatch(ComplianceError, PermissionError):
    """The signing key on disk is not the key that signed this log's checkpoints."""

    code = "SIGNING_KEY_MISMATCH"


class ExportNotRecordable(ComplianceError, PermissionError):
    """The node folder has no audit signing key, so an export from it could not be recorded
    (a copy of the folder, handed over as evidence): no report is written and no key made."""

    code = "EXPORT_NOT_RECORDABLE"


class LogIntegrityError(ComplianceError, ValueError):
    """The log's entries or checkpoints show tampering; `index` is the first bad entry."""

    code = "LOG_INTEGRITY"

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class MalformedCheckpoint(ComplianceError, ValueError):
    """A checkpoint document or row lacks a field or has one of the wrong type or form."""

    code = "MALFORMED_CHECKPOINT"


class SignatureInvalid(ComplianceError, ValueError):
    """A checkpoint's Ed25519 signature does not verify under the key it is checked with."""

    code = "SIGNATURE_INVALID"


class OriginMismatch(ComplianceError, ValueError):
    """An audit log was opened (or a checkpoint presented) under another node's origin."""

    code = "ORIGIN_MISMATCH"


class WitnessIsOwnStore(ComplianceError, ValueError):
    """A node's own witness store (the checkpoints it accepted from others) was given as the
    witness of its own log: a node cannot vouch for itself."""

    code = "WITNESS_IS_OWN_STORE"


class CheckpointRejected(ComplianceError, ValueError):
    """A witness refused a signed checkpoint (bad signature, rollback, inconsistent proof)."""

    code = "CHECKPOINT_REJECTED"


class ProcessingRecordMissing(ComplianceError, FileNotFoundError):
    """The node has no GDPR Art. 30 record of processing (`processing-record.yaml`)."""

    code = "PROCESSING_RECORD_MISSING"


class ProcessingRecordInvalid(ComplianceError, ValueError):
    """The node's GDPR Art. 30 record of processing does not satisfy its schema."""

    code = "PROCESSING_RECORD_INVALID"


class ReportError(ComplianceError, ValueError):
    """A report cannot be produced from the given period, format or output path."""

    code = "REPORT_ERROR"
