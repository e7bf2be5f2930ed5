"""The aggregator's one root error.

Every error the `aggregator` package defines descends from `AggregatorError` (itself a
`HealthFedError`): enrolment refusals, the state store, a failed plan, an aborted secure sum,
unusable round-metrics folders. So `except AggregatorError` catches everything this package
raises on purpose."""

from __future__ import annotations

from healthfed_common.errors import HealthFedError


class AggregatorError(HealthFedError):
    """Root of every error raised by the aggregator."""

    code = "AGGREGATOR_ERROR"
