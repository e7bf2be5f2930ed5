"""The DP package's exception tree: one root under HealthFedError, leaves that also subclass
the matching built-in, each with a stable code."""

from __future__ import annotations

from healthfed_common.errors import HealthFedError


class DPError(HealthFedError):
    """Root of every error raised by healthfed_common.dp."""

    code = "DP_ERROR"


class InvalidDpEvent(DPError, ValueError):
    """A stored or received DP event is malformed or names a mechanism we do not account."""

    code = "DP_EVENT_INVALID"


class CalibrationFailed(DPError, ValueError):
    """No noise multiplier reaches the target (epsilon, delta) for these parameters."""

    code = "DP_CALIBRATION_FAILED"
