"""A silo behind a dead network keeps retrying with backoff, and still stops at once."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from pipelines.local_federation import free_port, provision_local_federation


def test_silo_retries_an_unreachable_aggregator_and_stops_promptly_on_sigterm(tmp_path: Path) -> None:
    federation = provision_local_federation(tmp_path / "fed", "resilience", ["alpha"], f"127.0.0.1:{free_port()}")
    silo = subprocess.Popen(
        [sys.executable, "-m", "silo_node.cli.main", "run", "--config", str(federation.kits["alpha"] / "silo.yaml")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        time.sleep(20)  # nothing listens: the silo must be retrying, not dead
        assert silo.poll() is None
        began = time.time()
        silo.send_signal(signal.SIGTERM)
        silo.wait(timeout=15)
        stopped_in = time.time() - began
    finally:
        if silo.poll() is None:
            silo.kill()
    output = silo.stdout.read() if silo.stdout else ""
    assert "aggregator unreachable" in output
    assert stopped_in < 10, f"took {stopped_in:.1f}s to stop"
    assert silo.returncode == 0
