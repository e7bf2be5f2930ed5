"""The silo node's one root error.

Every error the `silo_node` package defines descends from `SiloNodeError` (itself a
`HealthFedError`): the data layer (`silo_node.datasets.errors.DataLayerError`), the privacy
ledger, enrolment, the state lock, the connection to the aggregator and the runner's task
refusals. So `except SiloNodeError` catches everything this package raises on purpose, and
anything else is a bug or a library failure, which the runner answers as
SILO_INTERNAL_ERROR without its text."""

from __future__ import annotations

from healthfed_common.errors import HealthFedError


class SiloNodeError(HealthFedError):
    """Root of every error raised by the silo node."""

    code = "SILO_NODE_ERROR"
