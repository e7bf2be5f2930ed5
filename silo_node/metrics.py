"""Prometheus metrics of a silo: tasks run and refused, bytes released, and the privacy
spent per dataset, read from the privacy ledger.

Why the privacy numbers are read from the ledger at scrape time and not counted in memory:
the ledger is the record of truth (a charge is committed before anything leaves); a counter
would restart at zero with the process and could disagree with it. The collector opens the
silo database for each scrape with its own connection, composes the stored DP events with
the ledger's own accountant (`PrivacyLedger.spent`), and caches the result per dataset until
a new charge arrives, so a scrape every 15 s costs one small query when nothing changed.

The endpoint binds 127.0.0.1 by default: a silo opens no network port unless the hospital
chooses to (see `healthfed_common.metrics`). Dataset names are local and bounded.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from healthfed_common.metrics import DEFAULT_ADDRESS, MetricsServer, start_metrics_server
from silo_node.privacy_ledger import PrivacyLedger, PrivacyLedgerError
from silo_node.storage import open_silo_db

log = logging.getLogger("healthfed.silo.metrics")

DB_FILE = "silo.sqlite3"


class PrivacyLedgerCollector(Collector):
    """Exports, per dataset with a budget or a charge: epsilon spent (composed), epsilon and
    delta budget, epsilon remaining and the number of charges; plus the egress record's
    total bytes. Reads `state_dir/silo.sqlite3`; reports nothing before it exists."""

    def __init__(self, state_dir: Path) -> None:
        self._db_path = Path(state_dir) / DB_FILE
        self._lock = threading.Lock()
        # dataset -> (charge count, last charged_at) -> epsilon spent
        self._cache: dict[str, tuple[tuple[int, float], float]] = {}

    def _spent(self, ledger: PrivacyLedger, dataset: str) -> tuple[float, int]:
        charges = ledger.charges(dataset)
        key = (len(charges), charges[-1].charged_at if charges else 0.0)
        cached = self._cache.get(dataset)
        if cached is not None and cached[0] == key:
            return cached[1], len(charges)
        epsilon, _ = ledger.spent(dataset) if charges else (0.0, 0.0)
        self._cache[dataset] = (key, epsilon)
        return epsilon, len(charges)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        spent = GaugeMetricFamily(
            "healthfed_silo_privacy_epsilon_spent",
            "Epsilon spent on a dataset: every charged DP event composed by the ledger's accountant.",
            labels=["dataset"],
        )
        budget_eps = GaugeMetricFamily(
            "healthfed_silo_privacy_epsilon_budget", "The dataset's total epsilon budget.", labels=["dataset"]
        )
        budget_delta = GaugeMetricFamily(
            "healthfed_silo_privacy_delta_budget", "The dataset's delta budget.", labels=["dataset"]
        )
        remaining = GaugeMetricFamily(
            "healthfed_silo_privacy_epsilon_remaining", "Epsilon budget minus epsilon spent (>= 0).",
            labels=["dataset"],
        )
        charges = GaugeMetricFamily(
            "healthfed_silo_privacy_charges", "Rounds charged to the dataset's privacy ledger.", labels=["dataset"]
        )
        egress = GaugeMetricFamily(
            "healthfed_silo_egress_recorded_bytes", "Bytes of every payload in the egress record (all time)."
        )
        if self._db_path.exists():
            with self._lock:
                self._read(spent, budget_eps, budget_delta, remaining, charges, egress)
        yield from (spent, budget_eps, budget_delta, remaining, charges, egress)

    def _read(self, spent: GaugeMetricFamily, budget_eps: GaugeMetricFamily, budget_delta: GaugeMetricFamily,
              remaining: GaugeMetricFamily, charges: GaugeMetricFamily, egress: GaugeMetricFamily) -> None:
        connection = open_silo_db(self._db_path)
        try:
            ledger = PrivacyLedger(connection)
            for dataset in ledger.datasets():
                epsilon, count = self._spent(ledger, dataset)
                spent.add_metric([dataset], epsilon)
                charges.add_metric([dataset], count)
                try:
                    budget = ledger.budget(dataset)
                except PrivacyLedgerError:
                    continue  # charges without a budget cannot happen through the ledger API
                budget_eps.add_metric([dataset], budget.epsilon)
                budget_delta.add_metric([dataset], budget.delta)
                remaining.add_metric([dataset], max(0.0, budget.epsilon - epsilon))
            try:
                row = connection.execute("SELECT COALESCE(SUM(bytes), 0) FROM egress").fetchone()
                egress.add_metric([], float(row[0]))
            except sqlite3.OperationalError:
                pass  # no egress table before the first `silo-node run`
        except sqlite3.Error as error:
            # A scrape must not take the node down; the gap in the series shows the problem.
            log.warning("could not read the privacy ledger for metrics: %s", error)
        finally:
            connection.close()


class SiloMetrics:
    """All silo metrics, in one private registry. Pass `state_dir` to export the privacy
    ledger and egress totals (read at scrape time)."""

    def __init__(self, silo_id: str, state_dir: Path | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._tasks = Counter(
            "healthfed_silo_tasks", "Tasks answered with a result, by kind (train or evaluate).",
            ["kind"], registry=self.registry,
        )
        self._refused = Counter(
            "healthfed_silo_tasks_refused",
            "Tasks refused, by refusal code (AWAITING_APPROVAL, FEATURE_NOT_ALLOWED, PRIVACY_BUDGET_EXCEEDED...).",
            ["code"], registry=self.registry,
        )
        self._released = Counter(
            "healthfed_silo_released_bytes", "Bytes of payloads released to the aggregator since start.",
            registry=self.registry,
        )
        self._polls = Counter(
            "healthfed_silo_polls", "Polls answered by the aggregator.", registry=self.registry,
        )
        self._last_contact = Gauge(
            "healthfed_silo_last_contact_timestamp_seconds",
            "Unix time of the last successful call to the aggregator.", registry=self.registry,
        )
        info = Gauge("healthfed_silo_info", "Constant 1; labels describe this silo.", ["silo"], registry=self.registry)
        info.labels(silo=silo_id).set(1)
        if state_dir is not None:
            self.registry.register(PrivacyLedgerCollector(state_dir))

    def task_run(self, kind: str = "train") -> None:
        """A task of `kind` ran and its result was sent."""
        self._tasks.labels(kind=kind).inc()

    def refusal(self, code: str) -> None:
        """A task was refused with `code`."""
        self._refused.labels(code=code).inc()

    def bytes_released(self, n: int) -> None:
        """A payload of `n` bytes was released (call where the egress record is written)."""
        self._released.inc(max(0, n))

    def contact(self, now: float | None = None) -> None:
        """The aggregator answered a call (poll or submit)."""
        self._polls.inc()
        if now is None:
            self._last_contact.set_to_current_time()
        else:
            self._last_contact.set(now)

    def serve(self, port: int, address: str = DEFAULT_ADDRESS) -> MetricsServer:
        """Starts the `/metrics` endpoint for this registry (127.0.0.1 unless told)."""
        return start_metrics_server(port, self.registry, address)


Metrics = SiloMetrics
