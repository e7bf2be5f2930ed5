"""The health probe against a real node started by the real entrypoint (outside Docker):
healthy while `silo-node run` (exec'd by the entrypoint, same pid) runs and its database
opens; unhealthy once the process is gone. And the slow one: an aggregator and a silo, both
started through their entrypoints, talk mutual TLS and the silo's answer reaches the aggregator."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.local_federation import provision_local_federation
from tests.deploy.conftest import DEPLOY, VENV_BIN, Mounts
from tests.deploy.plans import write_plan

PROBE = DEPLOY / "healthcheck.py"


def _probe(role: str, state: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(PROBE), "probe", role, "--state-dir", str(state)],
                          capture_output=True, text=True, timeout=30, check=False)


def _start(role: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHFED_")}
    base |= {"HEALTHFED_PYTHON": sys.executable, "HEALTHFED_SILO_NODE": str(VENV_BIN / "silo-node"),
             "HEALTHFED_AGGREGATOR": str(VENV_BIN / "aggregator"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    with log.open("wb") as out:
        return subprocess.Popen([str(DEPLOY / role / "entrypoint.sh")], env=base | env, stdout=out,
                                stderr=subprocess.STDOUT)


def _wait_healthy(role: str, state: Path, process: subprocess.Popen[bytes], log: Path, timeout: float = 90.0) -> str:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{role} exited with {process.returncode}:\n{log.read_text()}")
        result = _probe(role, state)
        if result.returncode == 0:
            return result.stdout
        last = result.stderr
        time.sleep(0.5)
    pytest.fail(f"{role} never became healthy: {last}\n{log.read_text()}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_probe_before_start_is_unhealthy(tmp_path: Path) -> None:
    result = _probe("silo", tmp_path)
    assert result.returncode == 1
    assert "no readable pid file" in result.stderr


def test_probe_follows_a_real_silo_started_by_the_entrypoint(mounts: Mounts) -> None:
    """The aggregator address of this kit is a closed port: the silo keeps retrying, which is
    what a silo does while its network is down, and must still count as alive."""
    state = mounts.state()
    log = mounts.root / "silo.log"
    process = _start("silo", {
        "HEALTHFED_KIT_DIR": str(mounts.kit()), "HEALTHFED_STATE_DIR": str(state),
        "HEALTHFED_DATA_DIR": str(mounts.data()), "HEALTHFED_ALLOW_WRITABLE_DATA": "1",
    }, log)
    try:
        healthy = _wait_healthy("silo", state, process, log)
        # the entrypoint exec'd: the node runs under the entrypoint's own pid
        assert f"pid {process.pid} (silo-node run)" in healthy
        assert "silo.sqlite3 opens" in healthy and "certificate valid" in healthy
        assert (state / ".healthfed" / "pid").read_text().strip() == str(process.pid)
    finally:
        process.kill()
        process.wait(timeout=10)
    gone = _probe("silo", state)
    assert gone.returncode == 1 and "is not running" in gone.stderr


def test_probe_reports_a_database_that_does_not_open(mounts: Mounts) -> None:
    """A live process of the right command but a corrupt database is unhealthy."""
    state = mounts.state()
    (state / ".healthfed").mkdir(parents=True)
    (state / "silo.sqlite3").write_bytes(b"this is not a database" * 100)
    # a stand-in process whose argv is `silo-node run` (the probe reads /proc/<pid>/cmdline)
    process = subprocess.Popen(["bash", "-c", f'exec -a silo-node "{sys.executable}" -c "import time; time.sleep(30)" run'])
    try:
        time.sleep(0.3)
        (state / ".healthfed" / "pid").write_text(str(process.pid))
        result = _probe("silo", state)
    finally:
        process.kill()
        process.wait()
    assert result.returncode == 1
    assert "silo.sqlite3 does not open" in result.stderr


@pytest.mark.slow
def test_aggregator_and_silo_containers_talk_through_their_entrypoints(tmp_path: Path) -> None:
    port = _free_port()
    fed = provision_local_federation(tmp_path / "fed", "compose-like", ["st-marys"], f"127.0.0.1:{port}")
    plan = write_plan(tmp_path / "plans" / "plan.json", min_silos_per_round=1)
    agg_state, silo_state = tmp_path / "agg-state", tmp_path / "silo-state"
    agg_log, silo_log = tmp_path / "aggregator.log", tmp_path / "silo.log"
    aggregator = _start("aggregator", {
        "HEALTHFED_FEDERATION_DIR": str(fed.aggregator_dir), "HEALTHFED_PLAN": str(plan),
        "HEALTHFED_STATE_DIR": str(agg_state), "HEALTHFED_LISTEN_ADDRESS": f"127.0.0.1:{port}",
        "HEALTHFED_OPERATOR": "C. Lee",  # the coordinator starting the plan (preflight refuses without)
    }, agg_log)
    silo = None
    try:
        _wait_healthy("aggregator", agg_state, aggregator, agg_log, timeout=180)
        silo = _start("silo", {
            "HEALTHFED_KIT_DIR": str(fed.kits["st-marys"]), "HEALTHFED_STATE_DIR": str(silo_state),
            "HEALTHFED_DATA_DIR": str(tmp_path / "no-data"),
        }, silo_log)
        _wait_healthy("silo", silo_state, silo, silo_log, timeout=180)
        # The silo has no dataset 'toy': it answers the task with a refusal code, which the
        # aggregator can only have received over the mutual-TLS channel both entrypoints set up.
        deadline = time.monotonic() + 180
        outcomes: list[tuple[str, str, str]] = []
        while time.monotonic() < deadline and not outcomes:
            time.sleep(1.0)
            db = sqlite3.connect(f"file:{agg_state / 'aggregator.sqlite3'}?mode=ro", uri=True)
            try:
                outcomes = db.execute("SELECT silo_id, outcome, code FROM round_outcomes").fetchall()
            finally:
                db.close()
        assert outcomes, f"no answer reached the aggregator\n{silo_log.read_text()}\n{agg_log.read_text()}"
        assert outcomes[0] == ("st-marys", "refused", "DATASET_NOT_FOUND")
    finally:
        for process in (silo, aggregator):
            if process is not None:
                _stop(process)
