"""The startup kit a coordinator hands each hospital: `silo.yaml` and the federation's CA.
The hospital completes it on its own machine (`silo-node enrol`): its TLS key, its Ed25519
signing key and, once the coordinator signed its request, its certificate. The schema lives
here because the aggregator writes it and the silo reads it."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from healthfed_common.errors import HealthFedError


class ConfigInvalid(HealthFedError, ValueError):
    code = "CONFIG_INVALID"


class TLSFiles(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    ca_certificate: Path = Field(description="The federation CA bundle (PEM) that signs every node.")
    certificate: Path = Field(description="This node's certificate (PEM).")
    private_key: Path = Field(description="This node's private key (PEM, keep mode 0600).")


class SiloConfig(BaseModel):
    """`silo.yaml`: everything a silo needs to join. Relative paths are relative to the file."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    silo_id: str = Field(pattern=r"^[a-z0-9][a-z0-9\-]{1,62}$", description="Must equal the certificate's CN.")
    federation: str = Field(description="Name of the federation this kit belongs to.")
    aggregator_address: str = Field(description="host:port of the aggregator (outbound connection).")
    aggregator_tls_name: str = Field(
        default="healthfed-aggregator", description="Name the aggregator certificate is checked against."
    )
    tls: TLSFiles
    signing_key: Path = Field(
        default=Path("signing.key"),
        description="The hospital's Ed25519 signing key (PEM, mode 0600), made by `silo-node enrol`; its public "
        "half is pinned in every secure-aggregation plan's cohort.",
    )
    state_dir: Path = Field(default=Path("silo-state"), description="Local database, audit log and dataset store.")
    poll_interval_s: float = Field(default=2.0, gt=0, description="Pause between polls when idle.")
    max_backoff_s: float = Field(
        default=60.0, gt=0,
        description="Cap of the retry backoff when unreachable (also of gRPC's own reconnection backoff).",
    )
    call_timeout_s: float = Field(
        default=60.0, gt=0,
        description="Longest one call to the aggregator may take; a call cut off by a dead network "
        "fails after this long and is retried with backoff. Must cover uploading the largest result.",
    )
    policy_file: Path | None = Field(default=None, description="Local approval policy (YAML); none = manual approval.")


def resolve_path(base: Path, path: Path) -> Path:
    """Config files name other files relative to themselves."""
    return path if path.is_absolute() else (base / path)


def resolve_tls(base: Path, tls: TLSFiles) -> TLSFiles:
    return TLSFiles(
        ca_certificate=resolve_path(base, tls.ca_certificate),
        certificate=resolve_path(base, tls.certificate),
        private_key=resolve_path(base, tls.private_key),
    )


def load_yaml_model(path: Path, model: type[BaseModel]) -> BaseModel:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigInvalid(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ConfigInvalid(f"{path}: is a folder; pass the YAML file in it") from None
    except OSError as error:  # permissions, I/O: a coded message, never a traceback
        raise ConfigInvalid(f"{path}: cannot be read ({error.strerror or type(error).__name__})") from None
    except UnicodeDecodeError:
        raise ConfigInvalid(f"{path}: not a UTF-8 text file") from None
    except yaml.YAMLError as error:
        raise ConfigInvalid(f"{path}: not valid YAML ({error})") from None
    try:
        return model.model_validate(raw or {})
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
        raise ConfigInvalid(f"{path}: {problems}") from None


def load_silo_config(path: Path) -> SiloConfig:
    config = load_yaml_model(path, SiloConfig)
    assert isinstance(config, SiloConfig)
    base = path.parent.resolve()
    return config.model_copy(
        update={
            "tls": resolve_tls(base, config.tls),
            "signing_key": resolve_path(base, config.signing_key),
            "state_dir": resolve_path(base, config.state_dir),
            "policy_file": resolve_path(base, config.policy_file) if config.policy_file else None,
        }
    )
