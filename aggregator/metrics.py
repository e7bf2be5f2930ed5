"""Prometheus metrics of the aggregator: rounds, round durations, silos seen, refusals and
bytes on the wire.

The coordinator and the gRPC service call these methods; this module calls nothing back and
imports nothing of theirs, so it can be wired in (or left out) without changing them. Each
`AggregatorMetrics` owns its registry (see `healthfed_common.metrics` for why).

Label values are bounded: refusal codes come from the protocol's closed set, silo ids from
the enrolment list (a connection refused before authentication is counted under its code
only, never under the id it claimed, so an attacker cannot grow the label set).
"""

from __future__ import annotations

import threading
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from healthfed_common.metrics import DEFAULT_ADDRESS, MetricsServer, start_metrics_server

# Rounds last from seconds (toy plans on loopback) to hours (imaging plans over WANs).
ROUND_SECONDS_BUCKETS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)


class AggregatorMetrics:
    """All aggregator metrics, in one private registry. Thread-safe (gRPC worker threads
    and the coordinator thread call it concurrently)."""

    def __init__(self, federation: str, enrolled: frozenset[str] | set[str] | tuple[str, ...] = ()) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._lock = threading.Lock()
        self._enrolled = frozenset(enrolled)
        self._seen: set[str] = set()
        labels = {"federation": federation}
        self._rounds = Counter(
            "healthfed_aggregator_rounds_completed", "Rounds aggregated and checkpointed.",
            registry=self.registry,
        )
        self._round_seconds = Histogram(
            "healthfed_aggregator_round_duration_seconds",
            "Wall time of a completed round, from the first offer to the checkpoint.",
            buckets=ROUND_SECONDS_BUCKETS, registry=self.registry,
        )
        self._round_silos = Gauge(
            "healthfed_aggregator_round_silos",
            "Silos whose results were aggregated in the last completed round.",
            registry=self.registry,
        )
        self._current_round = Gauge(
            "healthfed_aggregator_current_round", "Round number of the last completed round of the running plan.",
            registry=self.registry,
        )
        self._silos_seen = Gauge(
            "healthfed_aggregator_silos_seen",
            "Distinct enrolled silos that authenticated at least once since the aggregator started.",
            registry=self.registry,
        )
        self._silos_enrolled = Gauge(
            "healthfed_aggregator_silos_enrolled", "Silos enrolled in the federation.", registry=self.registry,
        )
        self._silos_enrolled.set(len(self._enrolled))
        self._last_seen = Gauge(
            "healthfed_aggregator_silo_last_seen_timestamp_seconds",
            "Unix time of the last authenticated call from each silo.",
            ["silo"], registry=self.registry,
        )
        self._refusals = Counter(
            "healthfed_aggregator_task_refusals",
            "Tasks a silo refused, by the silo's refusal code (e.g. FEATURE_NOT_ALLOWED).",
            ["code"], registry=self.registry,
        )
        self._no_answer = Counter(
            "healthfed_aggregator_task_no_answer", "Tasks a silo did not answer before the round deadline.",
            registry=self.registry,
        )
        self._connection_refusals = Counter(
            "healthfed_aggregator_connection_refusals",
            "Calls refused by the endpoint, by code (NOT_ENROLLED, CERTIFICATE_REVOKED, IDENTITY_MISMATCH...).",
            ["code"], registry=self.registry,
        )
        self._bytes_in = Counter(
            "healthfed_aggregator_received_bytes", "Request bytes received from silos (gRPC payloads).",
            registry=self.registry,
        )
        self._bytes_out = Counter(
            "healthfed_aggregator_sent_bytes", "Response bytes sent to silos (gRPC payloads).",
            registry=self.registry,
        )
        self._failing: set[str] = set()
        self._silos_failing = Gauge(
            "healthfed_aggregator_silos_failing",
            "Enrolled silos currently reported failing (no result in the plan's failing_silo_rounds "
            "consecutive round offers); rounds do not wait for them until they answer again.",
            registry=self.registry,
        )
        self._silo_failing = Gauge(
            "healthfed_aggregator_silo_failing",
            "1 while a silo is reported failing, 0 once it rejoined (only silos that were ever failing).",
            ["silo"], registry=self.registry,
        )
        self._plans = Counter(
            "healthfed_aggregator_plans_finished", "Plans that ended, by status (completed or failed).",
            ["status"], registry=self.registry,
        )
        info = Gauge(
            "healthfed_aggregator_info", "Constant 1; labels describe this aggregator.",
            list(labels), registry=self.registry,
        )
        info.labels(**labels).set(1)

    # --- rounds -----------------------------------------------------------------------
    def round_completed(self, seconds: float, silos: int, round_number: int | None = None) -> None:
        """A round was aggregated and checkpointed in `seconds` with `silos` results."""
        self._rounds.inc()
        self._round_seconds.observe(max(0.0, float(seconds)))
        self._round_silos.set(silos)
        if round_number is not None:
            self._current_round.set(round_number)

    def refusal(self, code: str) -> None:
        """A silo answered a task with a refusal carrying `code`."""
        self._refusals.labels(code=code).inc()

    def no_answer(self, count: int = 1) -> None:
        """`count` silos let a round's deadline pass without answering."""
        self._no_answer.inc(count)

    def silo_failing(self, silo_id: str, failing: bool) -> None:
        """`silo_id` was reported failing (True) or answered again and rejoined (False)."""
        if self._enrolled and silo_id not in self._enrolled:
            return
        with self._lock:
            (self._failing.add if failing else self._failing.discard)(silo_id)
            self._silos_failing.set(len(self._failing))
        self._silo_failing.labels(silo=silo_id).set(1 if failing else 0)

    def plan_finished(self, status: str) -> None:
        """The plan ended with `status` ("completed" or "failed")."""
        self._plans.labels(status=status).inc()

    # --- connections ------------------------------------------------------------------
    def silo_seen(self, silo_id: str) -> None:
        """An authenticated call from `silo_id` (call only after authentication passed)."""
        if self._enrolled and silo_id not in self._enrolled:
            return
        with self._lock:
            self._seen.add(silo_id)
            self._silos_seen.set(len(self._seen))
        self._last_seen.labels(silo=silo_id).set(time.time())

    def connection_refused(self, who: str, code: str, message: str = "") -> None:
        """Matches `aggregator.server.RefusalHook` (who, code, message): pass this method as
        `FederationService(on_refused_connection=...)`. Only the code becomes a label."""
        del who, message  # unauthenticated input: never a label value
        self._connection_refusals.labels(code=code).inc()

    def bytes_in(self, n: int) -> None:
        """`n` request bytes received from a silo."""
        self._bytes_in.inc(max(0, n))

    def bytes_out(self, n: int) -> None:
        """`n` response bytes sent to a silo."""
        self._bytes_out.inc(max(0, n))

    # --- exposure ---------------------------------------------------------------------
    def serve(self, port: int, address: str = DEFAULT_ADDRESS) -> MetricsServer:
        """Starts the `/metrics` endpoint for this registry (127.0.0.1 unless told)."""
        return start_metrics_server(port, self.registry, address)


# The brief's generic name; both role modules export `Metrics`.
Metrics = AggregatorMetrics
