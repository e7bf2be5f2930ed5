"""Silo metrics, scraped from a real `/metrics` endpoint; privacy spent is read from a real
privacy ledger in a real silo database and must equal what the ledger itself reports."""

from __future__ import annotations

from pathlib import Path

import dp_accounting
import pytest

from silo_node.egress import EgressRecord
from silo_node.metrics import SiloMetrics
from silo_node.privacy_ledger import PrivacyLedger
from silo_node.storage import open_silo_db
from tests.monitoring.scrape import scrape

PLAN = "ab" * 32


def _event(noise: float = 1.1, rate: float = 0.05, steps: int = 20) -> dp_accounting.DpEvent:
    return dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(rate, dp_accounting.GaussianDpEvent(noise)), steps
    )


def test_task_counters_are_scraped_over_http(tmp_path: Path) -> None:
    metrics = SiloMetrics("st-marys")
    server = metrics.serve(0)
    try:
        metrics.task_run("train")
        metrics.task_run("train")
        metrics.task_run("evaluate")
        metrics.refusal("AWAITING_APPROVAL")
        metrics.refusal("PRIVACY_BUDGET_EXCEEDED")
        metrics.refusal("PRIVACY_BUDGET_EXCEEDED")
        metrics.bytes_released(4096)
        metrics.contact(now=1_700_000_000.0)
        samples = scrape(server.url)
    finally:
        server.close()
    assert server.address == "127.0.0.1"
    assert samples[("healthfed_silo_tasks_total", (("kind", "train"),))] == 2
    assert samples[("healthfed_silo_tasks_total", (("kind", "evaluate"),))] == 1
    assert samples[("healthfed_silo_tasks_refused_total", (("code", "AWAITING_APPROVAL"),))] == 1
    assert samples[("healthfed_silo_tasks_refused_total", (("code", "PRIVACY_BUDGET_EXCEEDED"),))] == 2
    assert samples[("healthfed_silo_released_bytes_total", ())] == 4096
    assert samples[("healthfed_silo_polls_total", ())] == 1
    assert samples[("healthfed_silo_last_contact_timestamp_seconds", ())] == 1_700_000_000.0
    assert samples[("healthfed_silo_info", (("silo", "st-marys"),))] == 1


def test_privacy_spent_per_dataset_is_read_from_the_ledger(tmp_path: Path) -> None:
    state = tmp_path / "state"
    metrics = SiloMetrics("st-marys", state_dir=state)
    server = metrics.serve(0)
    try:
        before = scrape(server.url)  # no database yet: no samples, no error
        assert not any(name.startswith("healthfed_silo_privacy") for name, _ in before)

        connection = open_silo_db(state / "silo.sqlite3")
        ledger = PrivacyLedger(connection)
        egress = EgressRecord(connection)
        ledger.set_budget("cardiology_ehr", epsilon=8.0, delta=1e-5)
        ledger.set_budget("imaging", epsilon=3.0, delta=1e-6)
        ledger.charge("cardiology_ehr", PLAN, 1, _event())
        ledger.charge("cardiology_ehr", PLAN, 2, _event())
        egress.record(PLAN, 1, "TrainResult", b"x" * 300, "aggregator")
        egress.record(PLAN, 2, "TrainResult", b"y" * 200, "aggregator")

        first = scrape(server.url)
        spent, _ = ledger.spent("cardiology_ehr")
        assert spent > 0
        assert first[("healthfed_silo_privacy_epsilon_spent", (("dataset", "cardiology_ehr"),))] == pytest.approx(spent)
        assert first[("healthfed_silo_privacy_epsilon_budget", (("dataset", "cardiology_ehr"),))] == 8.0
        assert first[("healthfed_silo_privacy_delta_budget", (("dataset", "cardiology_ehr"),))] == 1e-5
        assert first[("healthfed_silo_privacy_epsilon_remaining", (("dataset", "cardiology_ehr"),))] == \
            pytest.approx(8.0 - spent)
        assert first[("healthfed_silo_privacy_charges", (("dataset", "cardiology_ehr"),))] == 2
        assert first[("healthfed_silo_privacy_epsilon_spent", (("dataset", "imaging"),))] == 0
        assert first[("healthfed_silo_egress_recorded_bytes", ())] == 500

        # A retry of a charged round spends nothing; a new round does, and the cache sees it.
        ledger.charge("cardiology_ehr", PLAN, 2, _event())
        assert scrape(server.url)[("healthfed_silo_privacy_charges", (("dataset", "cardiology_ehr"),))] == 2
        ledger.charge("cardiology_ehr", PLAN, 3, _event())
        third = scrape(server.url)
        spent_after, _ = ledger.spent("cardiology_ehr")
        assert spent_after > spent
        assert third[("healthfed_silo_privacy_epsilon_spent", (("dataset", "cardiology_ehr"),))] == \
            pytest.approx(spent_after)
        assert third[("healthfed_silo_privacy_charges", (("dataset", "cardiology_ehr"),))] == 3
        connection.close()
    finally:
        server.close()
