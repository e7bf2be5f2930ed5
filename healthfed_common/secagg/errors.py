"""The secure-aggregation exception tree.

One root, `SecAggError` (itself a `HealthFedError`), so a caller can catch everything the
protocol raises in one place; every leaf also subclasses the matching built-in so generic
code (`except PermissionError`) still does the right thing. Each class carries a stable
`code` that may cross the wire. Messages never contain vector contents or key material:
only ids, counts and phase names, which are public protocol metadata.
"""

from __future__ import annotations

from healthfed_common.errors import HealthFedError


class SecAggError(HealthFedError):
    """Root of every error raised by `healthfed_common.secagg`."""

    code = "SECAGG_ERROR"


class InvalidParameters(SecAggError, ValueError):
    """Session parameters that no honest party should accept (e.g. a threshold that would
    let an equivocating aggregator reconstruct both secrets of one silo)."""

    code = "SECAGG_INVALID_PARAMETERS"


class InvalidInput(SecAggError, ValueError):
    """A silo's own input vectors do not match the session (count, length, dtype, range)."""

    code = "SECAGG_INVALID_INPUT"


class PhaseOrderError(SecAggError, RuntimeError):
    """A protocol method was called out of order or twice where that is unsafe (e.g. a
    second masked input under the same masks would reveal the difference of the inputs)."""

    code = "SECAGG_PHASE_ORDER"


class TooFewSurvivors(SecAggError, RuntimeError):
    """Fewer than the threshold of silos are left at some phase: the round aborts and the
    aggregator learns nothing (no share of any secret is released below the threshold)."""

    code = "SECAGG_TOO_FEW_SURVIVORS"


class ProtocolViolation(SecAggError, ValueError):
    """A received message is malformed, replayed, from another session, from or about an
    unknown peer, of the wrong shape, or fails authentication."""

    code = "SECAGG_PROTOCOL_VIOLATION"


class AuthenticationFailed(ProtocolViolation):
    """A key advertisement's signature did not verify (a substituted key) or a share did not
    decrypt under its session/sender/recipient binding."""

    code = "SECAGG_AUTHENTICATION_FAILED"


class ShareRequestRefused(SecAggError, PermissionError):
    """A silo refuses an unmasking request that would let the aggregator learn an individual
    input: both kinds of share for one peer, a survivor set below the threshold, or a claim
    that this very silo dropped although it sent its masked input."""

    code = "SECAGG_SHARE_REQUEST_REFUSED"


class Equivocation(ShareRequestRefused):
    """The aggregator sent this silo a second, different message for a phase it already
    answered (another roster, inbox or survivor split): a sign of an aggregator showing
    different silos different views of the round."""

    code = "SECAGG_EQUIVOCATION"


class ConsistencyFailed(ShareRequestRefused):
    """An unmasking request without t valid consistency signatures over the very split this
    silo signed: the silos did not provably all see the same survivor set."""

    code = "SECAGG_CONSISTENCY_FAILED"


class CommitmentMismatch(ProtocolViolation):
    """A reconstructed self-mask seed does not open the commitment its silo advertised."""

    code = "SECAGG_COMMITMENT_MISMATCH"


__all__ = [
    "CommitmentMismatch",
    "ConsistencyFailed",
    "Equivocation",
    "AuthenticationFailed",
    "InvalidInput",
    "InvalidParameters",
    "PhaseOrderError",
    "ProtocolViolation",
    "SecAggError",
    "ShareRequestRefused",
    "TooFewSurvivors",
]
