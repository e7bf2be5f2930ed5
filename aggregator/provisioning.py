"""Creates a federation on disk: CA, aggregator certificate and config, and one startup kit
skeleton per hospital (`silo.yaml` and the CA certificate). Hospitals receive only their own
kit directory and complete it themselves: `silo-node enrol` makes their keys on their own
machine, `aggregator enrol` certifies the public key (see aggregator.enrolment). No hospital
private key is ever generated here."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from aggregator import pki
from aggregator.audit import AggregatorAudit


SILO_ID = re.compile(r"^[a-z0-9][a-z0-9\-]{1,62}$")


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
) -> Federation:
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} is not empty; refusing to overwrite a federation")
    if len(set(silo_ids)) != len(silo_ids) or not silo_ids:
        raise ValueError(f"silo ids must be unique and non-empty: {silo_ids}")
    malformed = [s for s in silo_ids if not SILO_ID.match(s)]
    if malformed:
        raise ValueError(f"silo ids must be 2-63 of a-z, 0-9 and '-', starting with a letter or digit: {malformed}")
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
            "enrolment_dir": "enrolled",
        },
    )
    (aggregator_dir / "enrolled").mkdir()
    kits: dict[str, Path] = {}
    audit = AggregatorAudit(aggregator_dir / "state")
    audit.record("certificate.issued", actor="coordinator", entities={"subject": pki.AGGREGATOR_TLS_NAME, "serial": server.serial_hex})
    for silo_id in silo_ids:
        kit = out_dir / "kits" / silo_id
        pki.write_certificate(kit / "ca.pem", ca.certificate)
        _write_yaml(
            kit / "silo.yaml",
            {
                "silo_id": silo_id,
                "federation": federation,
                "aggregator_address": address,
                "aggregator_tls_name": pki.AGGREGATOR_TLS_NAME,
                # silo.key, signing.key and silo.pem do not exist yet: the hospital makes the
                # keys (`silo-node enrol`) and installs the certificate the coordinator signs
                "tls": {"ca_certificate": "ca.pem", "certificate": "silo.pem", "private_key": "silo.key"},
                "signing_key": "signing.key",
                "state_dir": "state",
            },
        )
        # The kit's state directory knows whose it is, so local commands run before the
        # first `silo-node run` (e.g. `data add`) already sign audit entries as this silo.
        (kit / "state").mkdir(parents=True, exist_ok=True)
        (kit / "state" / "node-identity").write_text(silo_id + "\n")
        kits[silo_id] = kit
    audit.close()
    return Federation(aggregator_dir, config_path, kits)
