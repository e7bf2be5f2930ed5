"""The Prometheus `/metrics` endpoint both node roles share (their metrics live in
`aggregator.metrics` and `silo_node.metrics`).

Why bound to 127.0.0.1 by default: a silo opens no port to the network (README: outbound
connections only), and metrics name datasets and silos. Exposing them is a deliberate act:
pass `address="0.0.0.0"` (the containers do, inside their own network namespace, so a
Prometheus on the same pod or compose network can scrape them).

Why an explicit registry: each `Metrics` object owns a `CollectorRegistry`, so two nodes in
one process (tests, the local federation harness) never mix their numbers, and nothing is
registered at import time.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server

DEFAULT_ADDRESS = "127.0.0.1"


@dataclass
class MetricsServer:
    """A running `/metrics` endpoint. `port` is the bound port (useful with port 0)."""

    address: str
    port: int
    _server: WSGIServer
    _thread: threading.Thread

    @property
    def url(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stops serving and releases the port."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)


def start_metrics_server(port: int, registry: CollectorRegistry, address: str = DEFAULT_ADDRESS) -> MetricsServer:
    """Serves `registry` at http://address:port/metrics from a daemon thread. Port 0 picks
    a free port (read it back from `.port`). Raises OSError if the port cannot be bound."""
    server, thread = start_http_server(port, addr=address, registry=registry)
    bound_port = int(server.server_address[1])
    return MetricsServer(address, bound_port, server, thread)
