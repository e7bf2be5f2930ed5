"""`aggregator.yaml`: the coordinator's settings, written by `aggregator provision`."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from aggregator.state_store import SQLITE_PREFIX, check_database_url, sqlite_path_from_url
from healthfed_common.startup_kit import TLSFiles, load_yaml_model, resolve_path, resolve_tls


class AggregatorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    federation: str = Field(description="Federation name (also in every startup kit).")
    listen_address: str = Field(default="127.0.0.1:50051", description="host:port the gRPC server binds.")
    tls: TLSFiles
    ca_private_key: Path = Field(description="CA key, needed only to issue certificates; keep offline if you can.")
    state_dir: Path = Field(default=Path("aggregator-state"), description="Audit log, round metrics, and the SQLite state database unless database_url names another.")
    database_url: str | None = Field(
        default=None,
        description="Where plans, checkpoints and revocations live: sqlite:///file (relative to this file's "
        "directory) or sqlite:////absolute/file, or postgresql://user:password@host:5432/database; "
        "default: state_dir/aggregator.sqlite3.",
    )
    max_message_bytes: int = Field(
        default=64 * 1024 * 1024, ge=16 * 1024, le=2**31 - 1,
        description="The largest request gRPC accepts from a silo, refused before any handler runs "
        "(a running plan lowers the limit for results to the largest answer it can produce).",
    )
    silos: tuple[str, ...] = Field(description="Silo ids of the federation (certificate CNs); each joins by enrolling.")
    enrolment_dir: Path = Field(
        default=Path("enrolled"),
        description="One record per enrolled hospital (`aggregator enrol`): its public signing key, fingerprint "
        "and certificate. `aggregator run` builds a secure-aggregation plan's cohort from it.",
    )

    @field_validator("database_url")
    @classmethod
    def _known_backend(cls, url: str | None) -> str | None:
        return None if url is None else check_database_url(url)

    def state_database(self) -> str:
        """The URL `open_state_store` opens: `database_url`, or the SQLite file in state_dir."""
        return self.database_url or f"{SQLITE_PREFIX}{self.state_dir / 'aggregator.sqlite3'}"


def load_aggregator_config(path: Path) -> AggregatorConfig:
    config = load_yaml_model(path, AggregatorConfig)
    assert isinstance(config, AggregatorConfig)
    base = path.parent.resolve()
    return config.model_copy(
        update={
            "tls": resolve_tls(base, config.tls),
            "ca_private_key": resolve_path(base, config.ca_private_key),
            "enrolment_dir": resolve_path(base, config.enrolment_dir),
            "state_dir": resolve_path(base, config.state_dir),
            "database_url": _resolve_sqlite_url(base, config.database_url),
        }
    )


def _resolve_sqlite_url(base: Path, url: str | None) -> str | None:
    """A relative SQLite path is relative to the config file, like every other path in it."""
    if url is None or not url.startswith(SQLITE_PREFIX):
        return url
    return f"{SQLITE_PREFIX}{resolve_path(base, sqlite_path_from_url(url))}"
