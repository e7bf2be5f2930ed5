"""The aggregator's state behaves the same on SQLite and PostgreSQL (every test named
`..._on_each_backend` runs once per backend, on real databases), and database URLs that
name no backend, or a server that cannot be reached, are refused with a clear message
that never shows a password."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np
import psycopg
import pytest

from aggregator.cli.main import main
from aggregator.config import load_aggregator_config
from aggregator.pki import certificate_serial_hex
from pipelines.local_federation import provision_local_federation
from aggregator.state_postgres import PostgresStateStore
from aggregator.state_store import (
    DatabaseUrlInvalid,
    SqliteStateStore,
    StateStoreUnavailable,
    open_state_store,
)
from healthfed_common.startup_kit import ConfigInvalid
from tests.aggregator_state.conftest import use_database
from tests.aggregator_state.postgres_cluster import with_database

PLAN = "a" * 64
OTHER_PLAN = "b" * 64


def _arrays() -> list[np.ndarray]:
    """Values a checkpoint must keep bit for bit: odd dtypes, NaN/inf/-0.0, empty, 0-d, views."""
    rng = np.random.default_rng(7)
    strided = rng.normal(size=(4, 6)).astype(np.float32).T  # a non-contiguous view
    return [
        rng.normal(size=(3, 5)).astype(np.float32),
        np.array([np.nan, np.inf, -np.inf, -0.0, 5e-324, np.finfo(np.float64).max]),
        np.array([np.iinfo(np.int64).min, -1, 0, np.iinfo(np.int64).max], dtype=np.int64),
        np.array([True, False, True]),
        np.zeros((0, 7), dtype=np.float16),
        np.array(2.5, dtype=np.float64),
        strided,
    ]


def _assert_identical(got: list[np.ndarray], expected: list[np.ndarray]) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()


def test_plan_lifecycle_on_each_backend(state_url: str) -> None:
    with open_state_store(state_url) as store:
        assert store.plan_status(PLAN) is None
        store.start_plan(PLAN, b'{"name": "toy"}')
        assert store.plan_status(PLAN) == "running"
        store.finish_plan(PLAN, "failed", "round 2: too few silos")
        assert store.plan_status(PLAN) == "failed"
        store.start_plan(PLAN, b'{"name": "toy"}')  # a restart resumes the same plan
        assert store.plan_status(PLAN) == "running"
        store.finish_plan(PLAN, "completed")
        assert store.plan_status(PLAN) == "completed"
        assert store.plan_status(OTHER_PLAN) is None


def test_checkpoint_round_trips_arrays_exactly_on_each_backend(state_url: str) -> None:
    arrays = _arrays()
    with open_state_store(state_url) as store:
        store.save_checkpoint(PLAN, 1, arrays)
        checkpoint = store.latest_checkpoint(PLAN)
        assert checkpoint is not None and checkpoint.plan_hash == PLAN and checkpoint.round == 1
        _assert_identical(checkpoint.state, arrays)
        _assert_identical(store.latest_checkpoint_at(PLAN, 1), arrays)


def test_latest_checkpoint_is_the_highest_round_of_its_plan_on_each_backend(state_url: str) -> None:
    with open_state_store(state_url) as store:
        assert store.latest_checkpoint(PLAN) is None
        for round_number in (1, 3, 2):
            store.save_checkpoint(PLAN, round_number, [np.full(3, round_number, dtype=np.float32)])
        store.save_checkpoint(OTHER_PLAN, 9, [np.zeros(1)])
        latest = store.latest_checkpoint(PLAN)
        assert latest is not None and latest.round == 3
        assert latest.state[0].tolist() == [3.0, 3.0, 3.0]
        # A round run again after a crash replaces its checkpoint.
        store.save_checkpoint(PLAN, 3, [np.full(3, 30, dtype=np.float32)])
        latest = store.latest_checkpoint(PLAN)
        assert latest is not None and latest.state[0].tolist() == [30.0, 30.0, 30.0]
        assert store.latest_checkpoint_at(PLAN, 2)[0].tolist() == [2.0, 2.0, 2.0]
        with pytest.raises(LookupError, match="no checkpoint for round 4"):
            store.latest_checkpoint_at(PLAN, 4)


def test_outcomes_come_back_in_recorded_order_on_each_backend(state_url: str) -> None:
    # Recorded back to back, many share a timestamp: the order must still be the recording order.
    expected = [(r, a, f"silo-{i % 3}", ("result", "refused", "no_answer")[i % 3],
                 "PLAN_REFUSED" if i % 3 == 1 else "", "dataset too small" if i % 3 == 1 else "")
                for i, (r, a) in enumerate((r, a) for r in (1, 2, 3) for a in (1, 2) for _ in range(5))]
    with open_state_store(state_url) as store:
        for round_number, attempt, silo, outcome, code, message in expected:
            store.record_outcome(PLAN, round_number, attempt, silo, outcome, code, message)
            store.record_outcome(OTHER_PLAN, 99, 1, "elsewhere", "result")
        assert store.outcomes(PLAN) == expected
        assert store.outcomes(OTHER_PLAN) == [(99, 1, "elsewhere", "result", "", "")] * len(expected)
        assert store.outcomes("c" * 64) == []


def test_declarations_are_the_latest_per_plan_and_silo_on_each_backend(state_url: str) -> None:
    def declared(spent: float) -> dict[str, float]:
        return {"epsilon_spent": spent, "epsilon_remaining": 10.0 - spent, "delta": 1e-5}

    with open_state_store(state_url) as store:
        store.record_declaration(PLAN, 2, "alpha", declared(0.5))
        store.record_declaration(PLAN, 1, "alpha", declared(0.25))  # arrives late: still not the latest
        store.record_declaration(PLAN, 3, "Zeta", declared(0.75))
        store.record_declaration(PLAN, 3, "Zeta", declared(0.8))  # the same round again replaces it
        store.record_declaration(OTHER_PLAN, 1, "alpha", declared(1.0))
        store.record_declaration(OTHER_PLAN, 1, "bravo", {"epsilon_spent": 2.0})  # partial declaration
        # Byte order (upper case first) for silo ids on both backends, whatever the server's locale.
        assert store.declarations(PLAN) == [
            (PLAN, 3, "Zeta", 0.8, 9.2, 1e-5),
            (PLAN, 2, "alpha", 0.5, 9.5, 1e-5),
        ]
        assert store.declarations() == store.declarations(PLAN) + [
            (OTHER_PLAN, 1, "alpha", 1.0, 9.0, 1e-5),
            (OTHER_PLAN, 1, "bravo", 2.0, None, None),
        ]


def test_revocation_on_each_backend(state_url: str) -> None:
    with open_state_store(state_url) as store:
        assert not store.is_revoked("0a1b")
        store.revoke("0a1b", "north", "laptop stolen")
        store.revoke("0a1b", "north", "revoked twice")  # idempotent
        assert store.is_revoked("0a1b")
        assert not store.is_revoked("0A1B") and not store.is_revoked("0a1")


def test_reopened_store_keeps_everything_on_each_backend(state_url: str) -> None:
    arrays = _arrays()
    store = open_state_store(state_url)
    store.start_plan(PLAN, b"{}")
    store.save_checkpoint(PLAN, 1, arrays)
    store.record_outcome(PLAN, 1, 1, "north", "result")
    store.record_declaration(PLAN, 1, "north", {"epsilon_spent": 0.1, "epsilon_remaining": 0.9, "delta": 1e-6})
    store.revoke("ff00", "south", "left the federation")
    store.finish_plan(PLAN, "completed")
    store.close()
    with open_state_store(state_url) as reopened:  # the schema is created again, idempotently
        assert reopened.plan_status(PLAN) == "completed"
        checkpoint = reopened.latest_checkpoint(PLAN)
        assert checkpoint is not None and checkpoint.round == 1
        _assert_identical(checkpoint.state, arrays)
        assert reopened.outcomes(PLAN) == [(1, 1, "north", "result", "", "")]
        assert reopened.declarations(PLAN) == [(PLAN, 1, "north", 0.1, 0.9, 1e-6)]
        assert reopened.is_revoked("ff00")


def test_concurrent_writes_from_threads_on_each_backend(state_url: str) -> None:
    """The gRPC server's threads and the coordinator share one store."""
    threads, per_thread = 8, 15
    start = threading.Barrier(threads)
    failures: list[BaseException] = []
    with open_state_store(state_url) as store:

        def work(worker: int) -> None:
            try:
                start.wait()
                silo = f"silo-{worker}"
                for step in range(per_thread):
                    store.record_outcome(PLAN, step, 1, silo, "result", "", str(step))
                    store.save_checkpoint(PLAN, worker * 100 + step, [np.full(2, worker * 100 + step)])
                    store.record_declaration(PLAN, step, silo, {"epsilon_spent": float(step)})
                    store.is_revoked(f"{worker:02x}")
                    if step == per_thread // 2:
                        store.revoke(f"{worker:02x}", silo, "test")
            except BaseException as error:  # reported below, with the worker that failed
                failures.append(error)

        pool = [threading.Thread(target=work, args=(worker,)) for worker in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join(timeout=120)
        assert not failures, failures
        outcomes = store.outcomes(PLAN)
        assert len(outcomes) == threads * per_thread
        for worker in range(threads):
            mine = [int(message) for _, _, silo, _, _, message in outcomes if silo == f"silo-{worker}"]
            assert mine == list(range(per_thread))  # each thread's writes in its own order
            assert store.is_revoked(f"{worker:02x}")
            assert store.latest_checkpoint_at(PLAN, worker * 100 + 7)[0].tolist() == [worker * 100 + 7] * 2
        latest = store.latest_checkpoint(PLAN)
        assert latest is not None and latest.round == (threads - 1) * 100 + per_thread - 1
        assert [(row[2], row[1], row[3]) for row in store.declarations(PLAN)] == [
            (f"silo-{worker}", per_thread - 1, float(per_thread - 1)) for worker in range(threads)
        ]


def test_cli_revoke_writes_to_the_configured_database_on_each_backend(tmp_path: Path, state_url: str) -> None:
    federation = provision_local_federation(tmp_path / "fed", "revoke", ["north"], "127.0.0.1:1")
    use_database(federation.aggregator_config, state_url)
    assert main(["revoke", "north", "--config", str(federation.aggregator_config), "--reason", "left",
                 "--by", "Coordinator C. Lee"]) == 0
    serial = certificate_serial_hex((federation.kits["north"] / "silo.pem").read_bytes())
    with open_state_store(state_url) as store:
        assert store.is_revoked(serial)


# -- choosing a backend --------------------------------------------------------------------------


def test_plain_path_and_sqlite_urls_open_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "aggregator.sqlite3"
    with open_state_store(path) as store:
        assert isinstance(store, SqliteStateStore)
        store.revoke("01", "north", "test")
    for target in (str(path), f"sqlite:///{path}"):
        with open_state_store(target) as store:
            assert store.is_revoked("01"), target


def test_config_defaults_to_sqlite_in_state_dir_and_resolves_relative_sqlite_urls(tmp_path: Path) -> None:
    federation = provision_local_federation(tmp_path / "fed", "urls", ["north"], "127.0.0.1:1")
    config = load_aggregator_config(federation.aggregator_config)
    assert config.state_database() == f"sqlite:///{config.state_dir / 'aggregator.sqlite3'}"
    use_database(federation.aggregator_config, "sqlite:///db/agg.sqlite3")
    config = load_aggregator_config(federation.aggregator_config)
    assert config.state_database() == f"sqlite:///{federation.aggregator_config.parent.resolve() / 'db' / 'agg.sqlite3'}"


@pytest.mark.parametrize(("url", "shown"), [
    ("mysql://healthfed:hunter2secret@db:3306/state", "'mysql://healthfed:***@db:3306/state'"),
    ("oracle://db/state?password=hunter2secret", "'oracle://db/state?password=***'"),
    ("sqlite://relative-without-third-slash.db", "'sqlite://relative-without-third-slash.db'"),
    ("sqlite:///", "'sqlite:///'"),
    ("host=db password=hunter2secret dbname=state", "'host=db password=*** dbname=state'"),
])
def test_unsupported_database_urls_are_refused_by_name_without_the_password(url: str, shown: str,
                                                                            tmp_path: Path) -> None:
    with pytest.raises(DatabaseUrlInvalid) as refused:
        open_state_store(url)
    assert shown in str(refused.value) and "hunter2secret" not in str(refused.value)
    assert not list(Path.cwd().glob("*hunter2secret*"))  # no SQLite file named after it either
    federation = provision_local_federation(tmp_path / "fed", "bad", ["north"], "127.0.0.1:1")
    use_database(federation.aggregator_config, url)
    with pytest.raises(ConfigInvalid, match="database_url") as invalid:
        load_aggregator_config(federation.aggregator_config)
    assert "hunter2secret" not in str(invalid.value)


def test_unreachable_postgres_names_host_port_and_database_never_the_password() -> None:
    with socket.socket() as closed:  # a port nobody listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    began = time.monotonic()
    with pytest.raises(StateStoreUnavailable) as unreachable:
        open_state_store(f"postgresql://healthfed:hunter2secret@127.0.0.1:{port}/aggstate")
    message = str(unreachable.value)
    assert f"127.0.0.1:{port}" in message and '"aggstate"' in message and "healthfed" in message
    assert "hunter2secret" not in message
    assert time.monotonic() - began < 15


def test_wrong_postgres_password_is_refused_without_showing_it(postgres_url: str) -> None:
    parts = postgres_url.split("@", 1)
    if len(parts) < 2 or ":" not in parts[0].split("//", 1)[1]:
        pytest.skip("the server URL in HEALTHFED_TEST_POSTGRES_URL has no password to get wrong")
    user = parts[0].rsplit(":", 1)[0]
    with pytest.raises(StateStoreUnavailable, match="password authentication failed") as refused:
        open_state_store(f"{user}:not-the-Password-9f3a@{parts[1]}")
    assert "not-the-Password-9f3a" not in str(refused.value)


def test_postgres_store_reconnects_after_the_server_drops_it(postgres_url: str, postgres_server) -> None:
    database = postgres_url.rsplit("/", 1)[1]
    admin = psycopg.connect(with_database(postgres_server.admin_url, "postgres"), autocommit=True)

    def drop_store_connections() -> None:
        query = ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                 "WHERE datname = %s AND application_name = 'healthfed-aggregator'")
        assert admin.execute(query, (database,)).fetchall() == [(True,)]
        deadline = time.monotonic() + 10
        while admin.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND "
                            "application_name = 'healthfed-aggregator'", (database,)).fetchone() != (0,):
            assert time.monotonic() < deadline
            time.sleep(0.05)

    try:
        with PostgresStateStore(postgres_url) as store:
            store.start_plan(PLAN, b"{}")
            drop_store_connections()
            store.save_checkpoint(PLAN, 1, [np.arange(3)])  # repeatable: retried on a new connection
            assert store.plan_status(PLAN) == "running"
            drop_store_connections()
            with pytest.raises(psycopg.OperationalError):  # recording twice would be wrong: not retried
                store.record_outcome(PLAN, 1, 1, "north", "result")
            store.record_outcome(PLAN, 1, 1, "north", "result")  # the next call reconnects
            assert store.outcomes(PLAN) == [(1, 1, "north", "result", "", "")]
            checkpoint = store.latest_checkpoint(PLAN)
            assert checkpoint is not None and checkpoint.state[0].tolist() == [0, 1, 2]
    finally:
        admin.close()
