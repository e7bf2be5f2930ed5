"""`silo-node run`: join the federation and train when plans are approved."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from healthfed_common.errors import HealthFedError
from healthfed_common.json_logging import configure_logging
from healthfed_common.node_log import attach_log_file, route_noise_to_file
from healthfed_common.startup_kit import SiloConfig, load_silo_config

LOG_FILE_NAME = "silo-node.log"
"""In the state folder: everything the node logs, and TensorFlow's, absl's and gRPC's own output."""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="connect to the aggregator (outbound only) and take part in approved plans",
        description="Polls the aggregator over mutual TLS for work. Each task is checked against this "
        "hospital's rules (plan approval, feature allow-lists, privacy budget, the computation built "
        "locally from the plan) before any record is read. Stop with Ctrl-C or SIGTERM.",
    )
    parser.add_argument("--config", type=Path, required=True, help="silo.yaml from the startup kit")
    parser.add_argument("--exit-when-finished", action="store_true",
                        help="exit once the aggregator reports the plan finished (for scripted runs)")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="serve Prometheus /metrics on this port (default: off)")
    parser.add_argument("--metrics-address", default="127.0.0.1", help="address for /metrics (default 127.0.0.1)")
    parser.add_argument("--log-format", choices=("text", "json"), default="text", help="log line format on stderr")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # gRPC, pandas and the privacy accountant load here, not at import: `silo-node --help`
    # imports this module to register the command (tests/core/test_cli_startup.py).
    from silo_node.diagnostics import require_kit_files

    try:
        config = load_silo_config(args.config)
        require_kit_files(config)
    except HealthFedError as error:
        print(f"silo-node run: refused [{error.code}]: {error}", file=sys.stderr)
        return 1
    # Before TensorFlow loads: its (and gRPC's, absl's) own output goes to the node's log file,
    # the console keeps HealthFed's messages (healthfed_common/node_log.py says why and how).
    log_file = config.state_dir / LOG_FILE_NAME
    route_noise_to_file(log_file)
    configure_logging(args.log_format == "json", f"silo {config.silo_id}")
    attach_log_file(log_file)
    logging.getLogger("healthfed.silo").info("log file (with TensorFlow's and gRPC's own messages): %s", log_file)
    from silo_node.state_lock import StateDirLocked, StateLock

    try:  # one silo process per state folder, held until this process exits
        state_lock = StateLock(config.state_dir).acquire()
    except StateDirLocked as error:
        print(f"silo-node run: refused [{error.code}]: {error}", file=sys.stderr)
        return 1
    try:
        return _run_locked(args, config)
    finally:
        state_lock.release()


def _run_locked(args: argparse.Namespace, config: SiloConfig) -> int:
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    from silo_node.connection import AggregatorConnection, AggregatorRefused, ConnectionStopped
    from silo_node.metrics import SiloMetrics
    from silo_node.node import open_silo_services
    from silo_node.runner import SiloRunner  # loads TensorFlow: only `run` needs it

    try:
        services = open_silo_services(config)
    except HealthFedError as error:  # e.g. SIGNING_KEY_INVALID: an unreadable signing.key
        print(f"silo-node run: refused [{error.code}]: {error}", file=sys.stderr)
        return 1
    metrics = SiloMetrics(config.silo_id, state_dir=config.state_dir)
    metrics_server = metrics.serve(args.metrics_port, args.metrics_address) if args.metrics_port is not None else None
    connection = AggregatorConnection(config, stop=stop)
    try:
        SiloRunner(services, connection, config.poll_interval_s, metrics=metrics).serve(stop, args.exit_when_finished)
    except ConnectionStopped:
        print("silo-node run: stopped", file=sys.stderr)
    except AggregatorRefused as refused:
        print(f"silo-node run: the aggregator refused this silo: {refused}", file=sys.stderr)
        return 1
    finally:
        connection.close()
        services.close()
        if metrics_server is not None:
            metrics_server.close()
    return 0
