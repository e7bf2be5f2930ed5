"""A silo started before its aggregator connects as soon as the aggregator listens.

Why this is a test: a gRPC client channel advances a connection attempt (TCP, then each leg of
the TLS and HTTP/2 handshakes) only while some thread polls it. A silo whose calls fail at once
while the aggregator is down, and which sleeps between them, left that to C-core's backup poller
(every 5 s by default), so it connected 5-19 s after the aggregator was already listening. That
was the largest single wait in every federation test and in every real "silo first" start.
`silo_node.connection` sets gRPC's documented backup-poll interval before C-core initialises.

The silo side runs in its own process (the setting is read once per process, when gRPC
initialises, so it cannot be tried in the test process) through the product's
`AggregatorConnection`, against the product's aggregator server with mutual TLS on loopback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aggregator.config import load_aggregator_config
from aggregator.server import FederationService, start_server
from aggregator.state_store import StateStore
from aggregator.task_board import TaskBoard
from pipelines.local_federation import free_port, provision_local_federation

# The silo calls every <= 0.3 s (max_backoff_s), so without the handshake stall it connects
# within about that after the server listens. With the stall each handshake leg waits for the
# next 5 s backup poll. The bound sits between the two with margin for a loaded runner.
PROMPT_S = 3.0

_SILO = r"""
import json, sys, time
from pathlib import Path
from healthfed_common.startup_kit import load_silo_config
from healthfed_common.wire.messages import PollRequest
from silo_node.connection import AggregatorConnection

config = load_silo_config(Path(sys.argv[1])).model_copy(update={"max_backoff_s": 0.3, "call_timeout_s": 10.0})
connection = AggregatorConnection(config)
print(json.dumps({"polling": time.time()}), flush=True)
answer = connection.poll(PollRequest(config.silo_id, "test"))
print(json.dumps({"answered": time.time(), "answer": type(answer).__name__}), flush=True)
connection.close()
"""


def _silo_process(kit_config: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _SILO, str(kit_config)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)


def _line(process: subprocess.Popen[str], key: str) -> dict[str, object]:
    assert process.stdout is not None
    seen = []
    for line in process.stdout:
        if line.startswith("{") and key in line:
            return dict(json.loads(line))
        seen.append(line)
    raise AssertionError(f"the silo process exited (code {process.wait()}) before reporting {key!r}:\n"
                         + "".join(seen[-20:]))


def _seconds_from_listening_to_answer(tmp_path: Path, env: dict[str, str]) -> float:
    port = free_port()
    federation = provision_local_federation(tmp_path / "fed", "prompt-test", ["alpha"], f"127.0.0.1:{port}")
    silo = _silo_process(federation.kits["alpha"] / "silo.yaml", env)
    try:
        _line(silo, "polling")
        time.sleep(1.5)  # the silo has been refused, and its channel is backing off
        config = load_aggregator_config(federation.aggregator_config)
        store = StateStore(config.state_dir / "aggregator.sqlite3")
        service = FederationService(TaskBoard(), store, frozenset(config.silos), on_refused_connection=lambda *_: None)
        server, _ = start_server(config, service)
        listening = time.time()
        try:
            answered = _line(silo, "answered")
        finally:
            server.stop(0).wait()
            store.close()
        assert answered["answer"] == "Wait", answered
        return float(str(answered["answered"])) - listening
    finally:
        silo.kill()
        silo.wait()


def test_a_silo_started_before_the_aggregator_connects_within_moments_of_it_listening(tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS"}
    waited = _seconds_from_listening_to_answer(tmp_path, env)
    assert waited < PROMPT_S, f"the silo answered {waited:.1f} s after the aggregator began listening"


@pytest.mark.slow
def test_with_grpcs_default_backup_poll_the_same_silo_waits_seconds(tmp_path: Path) -> None:
    """The control: the environment restores gRPC's default (5 s), which the product only
    sets when unset, and the silo waits past the bound. Shows the test above can fail."""
    env = dict(os.environ, GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS="5000")
    waited = _seconds_from_listening_to_answer(tmp_path, env)
    assert waited >= PROMPT_S, f"with 5 s backup polls the silo still answered after {waited:.1f} s"
