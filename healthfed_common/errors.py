"""One exception tree for the shared package. Leaves also subclass the matching built-in so
callers can catch either. Each carries a stable `code` that may cross the wire; the free-text
message never does when it could carry patient data (silos send codes and safe messages)."""

from __future__ import annotations


class HealthFedError(Exception):
    """Root of every error raised by HealthFed's shared code."""

    code = "HEALTHFED_ERROR"


class PlanInvalid(HealthFedError, ValueError):
    """A plan document does not satisfy the schema."""

    code = "PLAN_INVALID"


class UnknownModel(HealthFedError, LookupError):
    """A plan names a model id that is not in this build's model registry."""

    code = "UNKNOWN_MODEL"


class WireFormatError(HealthFedError, ValueError):
    """Bytes received on the wire are not a valid HealthFed message."""

    code = "WIRE_FORMAT"


class ProtocolVersionMismatch(WireFormatError):
    """The peer speaks another version of the wire protocol."""

    code = "PROTOCOL_VERSION"


class ComputationMismatch(HealthFedError, PermissionError):
    """The computation the aggregator announced differs from the one built locally."""

    code = "FINGERPRINT_MISMATCH"
