"""Creates a federation on disk: CA, aggregator certificate and config, and one startup kit
per hospital. Hospitals receive only their own kit directory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from aggregator import pki
from aggregator.audit import AggregatorAudit


@dataclass(frozen=True)
class Federation:
    aggregator_dir: Path
    aggregator_config: Path
    kits: dict[str, Path]


def _write_yaml(path: Path, document: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")


def provision_federation(
    out_dir: Path,
    federation: str,
    silo_ids: list[str],
    address: str,
    *,
    listen_address: str | None = None,
    validity_days: int = 365,
) -> Federation:
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty; refusing to overwrite a federation")
    if len(set(silo_ids)) != len(silo_ids) or not silo_ids:
        raise ValueError(f"silo ids must be unique and non-empty: {silo_ids}")
    host = address.rsplit(":", 1)[0]
    ca = pki.create_ca(federation)
    server = pki.issue_server_certificate(ca, [host])
    aggregator_dir = out_dir / "aggregator"
    pki.write_certificate(aggregator_dir / "ca.pem", ca.certificate)
    pki.write_private_key(aggregator_dir / "ca.key", ca.key)
    pki.write_certificate(aggregator_dir / "server.pem", server.certificate)
    pki.write_private_key(aggregator_dir / "server.key", server.key)
    config_path = aggregator_dir / "aggregator.yaml"
    _write_yaml(
        config_path,
        {
            "federation": federation,
            "listen_address": listen_address or address,
            "tls": {"ca_certificate": "ca.pem", "certificate": "server.pem", "private_key": "server.key"},
            "ca_private_key": "ca.key",
            "state_dir": "state",
            "silos": list(silo_ids),
        },
    )
    kits: dict[str, Path] = {}
    audit = AggregatorAudit(aggregator_dir / "state")
    audit.record("certificate.issued", actor="coordinator", entities={"subject": pki.AGGREGATOR_TLS_NAME, "serial": server.serial_hex})
    for silo_id in silo_ids:
        kit = out_dir / "kits" / silo_id
        issued = pki.issue_silo_certificate(ca, silo_id, validity_days=validity_days)
        pki.write_certificate(kit / "ca.pem", ca.certificate)
        pki.write_certificate(kit / "silo.pem", issued.certificate)
        pki.write_private_key(kit / "silo.key", issued.key)
        _write_yaml(
            kit / "silo.yaml",
            {
                "silo_id": silo_id,
                "federation": federation,
                "aggregator_address": address,
                "aggregator_tls_name": pki.AGGREGATOR_TLS_NAME,
                "tls": {"ca_certificate": "ca.pem", "certificate": "silo.pem", "private_key": "silo.key"},
                "state_dir": "state",
            },
        )
        # The kit's state directory knows whose it is, so local commands run before the
        # first `silo-node run` (e.g. `data add`) already sign audit entries as this silo.
        (kit / "state").mkdir(parents=True, exist_ok=True)
        (kit / "state" / "node-identity").write_text(silo_id + "\n")
        kits[silo_id] = kit
        audit.record("certificate.issued", actor="coordinator", entities={"subject": silo_id, "serial": issued.serial_hex},
                     detail={"not_after": issued.certificate.not_valid_after_utc.isoformat()})
    audit.close()
    return Federation(aggregator_dir, config_path, kits)
