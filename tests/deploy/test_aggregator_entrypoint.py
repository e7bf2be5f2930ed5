"""deploy/aggregator/entrypoint.sh outside Docker: refusals with exit codes, the rendered
config (listen address, database URL, state volume), and the command it execs."""

from __future__ import annotations

import shutil
from pathlib import Path

from aggregator.config import load_aggregator_config
from tests.deploy.conftest import Mounts, run_entrypoint
from tests.deploy.plans import write_plan


def _secret_mount(mounts: Mounts, with_ca_key: bool = False) -> Path:
    """What the Helm chart's Secret (or compose's file mounts) provides: config and TLS files,
    without the CA key unless asked."""
    target = mounts.root / "federation-mount"
    target.mkdir()
    names = ["aggregator.yaml", "ca.pem", "server.pem", "server.key"] + (["ca.key"] if with_ca_key else [])
    for name in names:
        shutil.copy(mounts.federation.aggregator_dir / name, target / name)
    shutil.copytree(mounts.federation.aggregator_dir / "enrolled", target / "enrolled")
    return target


def _env(mounts: Mounts, federation_dir: Path, plan: Path, **extra: str) -> dict[str, str]:
    return {
        "HEALTHFED_FEDERATION_DIR": str(federation_dir),
        "HEALTHFED_PLAN": str(plan),
        "HEALTHFED_STATE_DIR": str(mounts.root / "agg-state"),
        "HEALTHFED_AGGREGATOR": "aggregator",
        "HEALTHFED_OPERATOR": "C. Lee",
    } | extra


def test_valid_mounts_exec_aggregator_run_with_the_rendered_config(mounts: Mounts) -> None:
    plan = write_plan(mounts.root / "plans" / "cardio-v1.json")
    env = _env(mounts, _secret_mount(mounts), plan, HEALTHFED_LINGER_S="600", HEALTHFED_METRICS_PORT="9464",
               HEALTHFED_LOG_FORMAT="json")
    result = run_entrypoint("aggregator", env, "--check")
    assert result.returncode == 0, result.stderr
    state = mounts.root / "agg-state"
    rendered = state / ".healthfed" / "aggregator.yaml"
    assert result.stdout.strip() == (
        f"aggregator entrypoint: would exec: aggregator run --config {rendered} --plan {plan} "
        f"--out {state}/runs/cardio-v1 --linger 600 --metrics-port 9464 --metrics-address 0.0.0.0 --log-format json"
    )
    assert "warning" not in result.stderr
    config = load_aggregator_config(rendered)
    assert config.listen_address == "0.0.0.0:50051"
    assert config.state_dir == state.resolve()
    assert config.database_url is None
    assert config.tls.private_key.is_absolute() and config.tls.private_key.name == "server.key"
    assert config.silos == ("st-marys", "riverside", "hillcrest")
    assert config.enrolment_dir.is_absolute() and sorted(p.name for p in config.enrolment_dir.glob("*.json")) == [
        "hillcrest.json", "riverside.json", "st-marys.json"]


def test_database_url_listen_address_and_revoke(mounts: Mounts) -> None:
    url = "postgresql://healthfed@db.internal:5432/healthfed"
    env = _env(mounts, _secret_mount(mounts), mounts.root / "absent.json",
               HEALTHFED_DATABASE_URL=url, HEALTHFED_LISTEN_ADDRESS="0.0.0.0:443")
    result = run_entrypoint("aggregator", env, "--check", "revoke", "riverside", "--reason", "left")
    assert result.returncode == 0, result.stderr  # revoke needs no plan
    rendered = mounts.root / "agg-state" / ".healthfed" / "aggregator.yaml"
    assert result.stdout.strip() == (
        f"aggregator entrypoint: would exec: aggregator revoke riverside --reason left --config {rendered}"
    )
    config = load_aggregator_config(rendered)
    assert config.database_url == url and config.listen_address == "0.0.0.0:443"


def test_mounted_ca_key_is_a_warning(mounts: Mounts) -> None:
    plan = write_plan(mounts.root / "plan.json")
    result = run_entrypoint("aggregator", _env(mounts, _secret_mount(mounts, with_ca_key=True), plan), "--check")
    assert result.returncode == 0, result.stderr
    assert "the CA private key" in result.stderr and "keep it offline" in result.stderr


def test_missing_config_plan_and_invalid_plan_are_refused(mounts: Mounts) -> None:
    plan = write_plan(mounts.root / "plan.json")
    missing = run_entrypoint("aggregator", _env(mounts, mounts.root / "nothing", plan), "--check")
    assert missing.returncode == 3
    assert f"aggregator config {mounts.root / 'nothing' / 'aggregator.yaml'} does not exist" in missing.stderr

    secret = _secret_mount(mounts)
    no_plan = run_entrypoint("aggregator", _env(mounts, secret, mounts.root / "no-plan.json"), "--check")
    assert no_plan.returncode == 3 and "[KIT_MISSING]: plan" in no_plan.stderr

    bad = write_plan(mounts.root / "bad.json", model={"id": "gpt"}, code="import os")
    invalid = run_entrypoint("aggregator", _env(mounts, secret, bad), "--check")
    assert invalid.returncode == 8 and "[PLAN_INVALID]" in invalid.stderr
    assert "refusing to start (exit 8)" in invalid.stderr

    nobody = run_entrypoint("aggregator", _env(mounts, secret, plan, HEALTHFED_OPERATOR=" "), "--check")
    assert nobody.returncode == 11 and "[OPERATOR_REQUIRED]" in nobody.stderr, nobody.stderr

    (secret / "server.key").unlink()
    no_key = run_entrypoint("aggregator", _env(mounts, secret, plan), "--check")
    assert no_key.returncode == 3 and "tls.private_key" in no_key.stderr


def test_server_certificate_of_another_federation_is_refused(mounts: Mounts) -> None:
    from aggregator.provisioning import provision_federation

    secret = _secret_mount(mounts)
    other = provision_federation(mounts.root / "other", "other", ["x1"], "127.0.0.1:1")
    shutil.copy(other.aggregator_dir / "server.pem", secret / "server.pem")
    shutil.copy(other.aggregator_dir / "server.key", secret / "server.key")
    result = run_entrypoint("aggregator", _env(mounts, secret, write_plan(mounts.root / "p.json")), "--check")
    assert result.returncode == 5 and "was not issued by the CA" in result.stderr
