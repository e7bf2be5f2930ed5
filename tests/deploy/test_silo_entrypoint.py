"""deploy/silo/entrypoint.sh outside Docker: it refuses broken mounts with a clear message
and a documented exit code, renders the effective config, and execs the right command."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.local_federation import provision_local_federation
from healthfed_common.startup_kit import load_silo_config
from tests.deploy.conftest import DEPLOY, Mounts, run_entrypoint, silo_env

ENTRYPOINT = DEPLOY / "silo" / "entrypoint.sh"


def _copy_kit(mounts: Mounts, silo: str = "st-marys") -> Path:
    """A private copy of a kit that a test may break."""
    copy = mounts.root / "kit-copy"
    shutil.copytree(mounts.kit(silo), copy)
    return copy


def _can_mount_read_only() -> bool:
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, check=False) \
        if shutil.which("unshare") else None
    return probe is not None and probe.returncode == 0


def test_valid_kit_on_a_read_only_data_mount_execs_silo_node_run(mounts: Mounts) -> None:
    """A real read-only bind mount of /data, in a private mount namespace."""
    if not _can_mount_read_only():
        pytest.skip("cannot create a mount namespace here (needs root or user namespaces); "
                    "test_writable_data_is_refused still checks the rule")
    data = mounts.data()
    env = silo_env(mounts)
    script = f'mount --bind -o ro "{data}" "{data}" && exec "{ENTRYPOINT}" --check'
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHFED_")} | {
        "HEALTHFED_PYTHON": sys.executable, "HEALTHFED_SILO_NODE": "silo-node"} | env
    result = subprocess.run(["unshare", "-m", "sh", "-c", script], env=full_env, capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    rendered = mounts.state() / ".healthfed" / "silo.yaml"
    assert result.stdout.strip() == f"silo entrypoint: would exec: silo-node run --config {rendered}"
    assert "warning" not in result.stderr


def test_writable_data_is_refused(mounts: Mounts) -> None:
    result = run_entrypoint("silo", silo_env(mounts), "--check")
    if not os.access(mounts.data(), os.W_OK):
        pytest.skip("the data folder is not writable for this user, so the rule cannot fire")
    assert result.returncode == 7
    assert "[DATA_NOT_READ_ONLY]" in result.stderr and str(mounts.data()) in result.stderr
    assert ":ro" in result.stderr  # says how to fix it
    assert "refusing to start (exit 7)" in result.stderr
    assert result.stdout == ""


def test_data_path_that_is_not_a_readable_folder_is_refused(mounts: Mounts) -> None:
    """A data mount that is a file (a single export mounted where the folder belongs) is
    DATA_UNREADABLE, exit 7, naming the path; the node does not start and nothing is rendered."""
    export = mounts.root / "export.csv"
    export.write_text("age,outcome\n61,1\n")
    env = silo_env(mounts, HEALTHFED_DATA_DIR=str(export), HEALTHFED_ALLOW_WRITABLE_DATA="1")
    result = run_entrypoint("silo", env, "--check")
    assert result.returncode == 7
    assert f"[DATA_UNREADABLE]: data directory {export} is not a readable directory" in result.stderr
    assert "readable by the container user" in result.stderr  # says how to fix it
    assert result.stdout == ""
    assert not (mounts.state() / ".healthfed" / "silo.yaml").exists()


def test_rendered_config_points_at_the_volumes_and_the_kit_stays_unchanged(mounts: Mounts) -> None:
    kit_before = (mounts.kit() / "silo.yaml").read_bytes()
    result = run_entrypoint("silo", silo_env(mounts, HEALTHFED_ALLOW_WRITABLE_DATA="1"), "--check")
    assert result.returncode == 0, result.stderr
    assert "is writable (HEALTHFED_ALLOW_WRITABLE_DATA=1)" in result.stderr
    rendered = mounts.state() / ".healthfed" / "silo.yaml"
    assert stat.S_IMODE(rendered.stat().st_mode) == 0o600
    config = load_silo_config(rendered)
    assert config.silo_id == "st-marys"
    assert config.state_dir == mounts.state().resolve()
    assert config.tls.certificate == mounts.kit() / "silo.pem"
    assert config.tls.private_key.is_absolute() and config.tls.ca_certificate.is_absolute()
    assert config.signing_key == mounts.kit() / "signing.key"  # absolute: the rendered file lives in /state
    assert (mounts.state() / "node-identity").read_text() == "st-marys\n"
    assert (mounts.kit() / "silo.yaml").read_bytes() == kit_before


def test_subcommands_metrics_and_log_flags_are_passed_on(mounts: Mounts) -> None:
    env = silo_env(mounts, HEALTHFED_ALLOW_WRITABLE_DATA="1", HEALTHFED_SILO_NODE="silo-node")
    local = run_entrypoint("silo", env, "--check", "data", "add", "ehr", "/data/export.csv", "--kind", "tabular")
    assert local.returncode == 0, local.stderr
    assert local.stdout.strip() == "silo entrypoint: would exec: silo-node data add ehr /data/export.csv --kind tabular"
    serving = run_entrypoint("silo", env | {"HEALTHFED_METRICS_PORT": "9464", "HEALTHFED_LOG_FORMAT": "json"},
                             "--check", "run", "--exit-when-finished")
    assert serving.returncode == 0, serving.stderr
    rendered = mounts.state() / ".healthfed" / "silo.yaml"
    assert serving.stdout.strip() == (
        f"silo entrypoint: would exec: silo-node run --config {rendered} --exit-when-finished "
        "--metrics-port 9464 --metrics-address 0.0.0.0 --log-format json"
    )


def test_missing_kit_is_refused(mounts: Mounts) -> None:
    env = silo_env(mounts, HEALTHFED_KIT_DIR=str(mounts.root / "no-kit"), HEALTHFED_ALLOW_WRITABLE_DATA="1")
    result = run_entrypoint("silo", env, "--check")
    assert result.returncode == 3
    assert f"[KIT_MISSING]: silo config {mounts.root / 'no-kit' / 'silo.yaml'} does not exist" in result.stderr
    assert "startup kit" in result.stderr
    assert not (mounts.state() / ".healthfed" / "silo.yaml").exists()


def test_unreadable_or_missing_key_is_refused(mounts: Mounts) -> None:
    kit = _copy_kit(mounts)
    env = silo_env(mounts, HEALTHFED_KIT_DIR=str(kit), HEALTHFED_ALLOW_WRITABLE_DATA="1")
    (kit / "silo.key").chmod(0)
    result = run_entrypoint("silo", env, "--check")
    if os.geteuid() != 0:  # root reads a 0000 file; then check a missing key instead
        assert result.returncode == 3 and "cannot be read by uid" in result.stderr
    (kit / "silo.key").unlink()
    result = run_entrypoint("silo", env, "--check")
    assert result.returncode == 3
    assert f"kit file tls.private_key {kit / 'silo.key'} does not exist" in result.stderr


def test_certificate_from_another_federation_is_refused(mounts: Mounts) -> None:
    kit = _copy_kit(mounts)
    other = provision_local_federation(mounts.root / "other", "other", ["st-marys"], "127.0.0.1:1")
    shutil.copy(other.kits["st-marys"] / "ca.pem", kit / "ca.pem")
    result = run_entrypoint("silo", silo_env(mounts, HEALTHFED_KIT_DIR=str(kit),
                                             HEALTHFED_ALLOW_WRITABLE_DATA="1"), "--check")
    assert result.returncode == 5
    assert "[CERTIFICATE_INVALID]" in result.stderr and "was not issued by the CA" in result.stderr


def test_kit_of_another_silo_is_refused(mounts: Mounts) -> None:
    kit = _copy_kit(mounts)
    document = yaml.safe_load((kit / "silo.yaml").read_text())
    document["silo_id"] = "riverside"
    (kit / "silo.yaml").write_text(yaml.safe_dump(document))
    result = run_entrypoint("silo", silo_env(mounts, HEALTHFED_KIT_DIR=str(kit),
                                             HEALTHFED_ALLOW_WRITABLE_DATA="1"), "--check")
    assert result.returncode == 5
    assert "certificate is for 'st-marys' but silo.yaml says silo_id 'riverside'" in result.stderr


def test_invalid_config_and_foreign_state_volume_are_refused(mounts: Mounts) -> None:
    kit = _copy_kit(mounts)
    env = silo_env(mounts, HEALTHFED_KIT_DIR=str(kit), HEALTHFED_ALLOW_WRITABLE_DATA="1")
    document = yaml.safe_load((kit / "silo.yaml").read_text())
    (kit / "silo.yaml").write_text(yaml.safe_dump(document | {"data_dir": "/data"}))
    result = run_entrypoint("silo", env, "--check")
    assert result.returncode == 4 and "[CONFIG_INVALID]" in result.stderr and "data_dir" in result.stderr

    (kit / "silo.yaml").write_text(yaml.safe_dump(document))
    mounts.state().mkdir(parents=True)
    (mounts.state() / "node-identity").write_text("hillcrest\n")
    result = run_entrypoint("silo", env, "--check")
    assert result.returncode == 4
    assert "belongs to silo 'hillcrest', not 'st-marys'" in result.stderr


def test_unwritable_state_volume_is_refused(mounts: Mounts) -> None:
    blocker = mounts.root / "state-is-a-file"
    blocker.write_text("")
    env = silo_env(mounts, HEALTHFED_STATE_DIR=str(blocker), HEALTHFED_ALLOW_WRITABLE_DATA="1")
    result = run_entrypoint("silo", env, "--check")
    assert result.returncode == 6
    assert f"[STATE_UNWRITABLE]: state directory {blocker} is not writable" in result.stderr


def test_kit_not_yet_enrolled_is_refused_with_the_enrolment_steps(mounts: Mounts) -> None:
    """A kit straight from `aggregator provision` has no key, signing key or certificate: the
    hospital makes them (`silo-node enrol`). Each missing piece is named, with the fix."""
    kit = _copy_kit(mounts)
    env = silo_env(mounts, HEALTHFED_KIT_DIR=str(kit), HEALTHFED_ALLOW_WRITABLE_DATA="1")
    (kit / "signing.key").unlink()
    result = run_entrypoint("silo", env, "--check")
    assert result.returncode == 3
    assert f"kit file signing_key {kit / 'signing.key'} does not exist" in result.stderr
    assert "silo-node enrol" in result.stderr
    for name in ("silo.pem", "silo.key"):
        (kit / name).unlink()
    result = run_entrypoint("silo", env, "--check")
    assert result.returncode == 3
    assert f"kit file tls.certificate {kit / 'silo.pem'} does not exist" in result.stderr
    assert "--install-certificate" in result.stderr


@pytest.mark.parametrize("key_name", ["silo.key", "signing.key"])
def test_private_key_readable_by_others_is_refused(mounts: Mounts, key_name: str) -> None:
    """A kit key another account can read is refused (exit 9), not merely warned about."""
    kit = _copy_kit(mounts)
    env = silo_env(mounts, HEALTHFED_KIT_DIR=str(kit), HEALTHFED_ALLOW_WRITABLE_DATA="1")
    assert run_entrypoint("silo", env, "--check").returncode == 0
    (kit / key_name).chmod(0o644)
    result = run_entrypoint("silo", env, "--check")
    assert result.returncode == 9, result.stderr
    assert "[KEY_PERMISSIONS]" in result.stderr and str(kit / key_name) in result.stderr
    assert "chmod 0600" in result.stderr


@pytest.mark.parametrize("name", ["ca.key", "backup.pem"])
def test_federation_ca_key_in_the_silo_kit_is_refused(mounts: Mounts, name: str) -> None:
    """The CA key in a hospital's kit (under its usual name or any other) stops the silo:
    whoever holds it can issue a certificate for any other hospital."""
    kit = _copy_kit(mounts)
    env = silo_env(mounts, HEALTHFED_KIT_DIR=str(kit), HEALTHFED_ALLOW_WRITABLE_DATA="1")
    ca_key = mounts.federation.aggregator_dir / "ca.key"
    shutil.copy(ca_key, kit / name)
    (kit / name).chmod(0o600)
    result = run_entrypoint("silo", env, "--check")
    assert result.returncode == 10, result.stderr
    assert "[CA_KEY_MOUNTED]" in result.stderr and str(kit / name) in result.stderr
    # another private key that is not the CA's (the silo's own key under another name) is fine
    (kit / name).unlink()
    shutil.copy(kit / "silo.key", kit / "backup.pem")
    assert run_entrypoint("silo", env, "--check").returncode == 0
