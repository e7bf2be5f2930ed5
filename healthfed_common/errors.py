"""One exception tree for all of HealthFed, rooted here.

`HealthFedError` is the common root. Each package has exactly one root under it, so a caller
can catch everything one package raises in one place:

- `healthfed_common`: `HealthFedError` itself, with the sub-roots `SecAggError`
  (`healthfed_common.secagg.errors`) and `DPError` (`healthfed_common.dp.errors`);
- `silo_node`: `SiloNodeError` (`silo_node.errors`);
- `aggregator`: `AggregatorError` (`aggregator.errors`);
- `compliance`: `ComplianceError` (`compliance.errors`).

Leaves also subclass the matching built-in (`PermissionError`, `ValueError`, ...) so generic
code still handles them sensibly. Each carries a stable `code`, a member of
`healthfed_common.error_codes.ErrorCode` (`tests/core/test_error_codes.py` checks it). A code
may cross the wire; the free-text message does so only where HealthFed wrote it for that
purpose (never exception text from a library, which could carry patient data)."""

from __future__ import annotations


class HealthFedError(Exception):
    """Root of every error raised by HealthFed."""

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
