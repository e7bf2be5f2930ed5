"""`aggregator.yaml`: the coordinator's settings, written by `aggregator provision`."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from healthfed_common.startup_kit import TLSFiles, load_yaml_model, resolve_path, resolve_tls


class AggregatorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    federation: str = Field(description="Federation name (also in every startup kit).")
    listen_address: str = Field(default="127.0.0.1:50051", description="host:port the gRPC server binds.")
    tls: TLSFiles
    ca_private_key: Path = Field(description="CA key, needed only to issue certificates; keep offline if you can.")
    state_dir: Path = Field(default=Path("aggregator-state"), description="SQLite database, checkpoints, audit log.")
    database_url: str | None = Field(default=None, description="sqlite:///path or postgresql://...; default: state_dir/aggregator.sqlite3")
    silos: tuple[str, ...] = Field(description="Enrolled silo ids (certificate CNs).")


def load_aggregator_config(path: Path) -> AggregatorConfig:
    config = load_yaml_model(path, AggregatorConfig)
    assert isinstance(config, AggregatorConfig)
    base = path.parent.resolve()
    return config.model_copy(
        update={
            "tls": resolve_tls(base, config.tls),
            "ca_private_key": resolve_path(base, config.ca_private_key),
            "state_dir": resolve_path(base, config.state_dir),
        }
    )
