"""Fixtures that run the aggregator-state tests against both backends on real servers:
SQLite files in tmp_path, and a fresh database per test on a PostgreSQL server
(see postgres_cluster.py). Without PostgreSQL the PostgreSQL cases skip with the reason,
except under CI=true, where they fail: CI must really exercise both backends."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.aggregator_state.postgres_cluster import PostgresServer, PostgresUnavailable

BACKENDS = ("sqlite", "postgresql")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = PostgresServer.from_environment()
    except PostgresUnavailable as error:
        if _in_ci():
            pytest.fail(f"CI=true requires the PostgreSQL backend tests to run: {error}", pytrace=False)
        pytest.skip(f"PostgreSQL unavailable: {error}")
    try:
        yield server
    finally:
        server.close()


@pytest.fixture()
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """postgresql://... of an empty database that exists for this test only."""
    url = postgres_server.create_database()
    try:
        yield url
    finally:
        postgres_server.drop_database(url)


@pytest.fixture(params=BACKENDS)
def state_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database_url for each backend: a SQLite file in tmp_path, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state' / 'aggregator.sqlite3'}"
    return str(request.getfixturevalue("postgres_url"))


def use_database(config_path: Path, url: str) -> None:
    """Points an aggregator.yaml written by `aggregator provision` at `url`."""
    document = yaml.safe_load(config_path.read_text())
    document["database_url"] = url
    config_path.write_text(yaml.safe_dump(document, sort_keys=False))
