"""`aggregator run`: serve the federation and run one plan to its end."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aggregator.progress import closing_line
from healthfed_common.actors import add_operator_argument, operator_from

LOG_FILE_NAME = "aggregator.log"
"""In STATE_DIR: everything the aggregator logs, and TensorFlow's, absl's and gRPC's own output."""

if TYPE_CHECKING:
    from aggregator.metrics_release import RoundMetricsRelease


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="serve hospitals and run a training plan to completion",
        description="Starts the mutual-TLS gRPC endpoint, runs PLAN round by round (resuming from the "
        "last checkpoint if this plan was interrupted), evaluates the final model on every hospital's "
        "held-out data, exports it as a Keras SavedModel and writes a JSON run report.",
    )
    parser.add_argument("--config", type=Path, required=True, help="aggregator.yaml from `aggregator provision`")
    parser.add_argument("--plan", type=Path, required=True, help="plan JSON file")
    parser.add_argument("--out", type=Path, required=True, help="directory for the model and run report")
    parser.add_argument("--linger", type=float, default=3.0,
                        help="seconds to keep serving after the plan ends so hospitals learn it finished")
    parser.add_argument("--metrics-port", type=int, default=None,
                        help="serve Prometheus /metrics on this port (default: off)")
    parser.add_argument("--metrics-address", default="127.0.0.1", help="address for /metrics (default 127.0.0.1)")
    parser.add_argument("--log-format", choices=("text", "json"), default="text", help="log line format on stderr")
    parser.add_argument("--round-metrics-dir", type=Path, default=None, metavar="DIR",
                        help="where each completed round's aggregate metrics (round seconds, silos counted, "
                        "training loss/accuracy, declared DP spending) are released, one subdirectory per plan "
                        "(the first 16 hex digits of its hash) holding metrics.csv (one row per round, column "
                        "'round') and tensorboard/ (run `tensorboard --logdir DIR`). Default: STATE_DIR/metrics "
                        "from aggregator.yaml. A resumed plan continues the same files; a round run again "
                        "after a crash replaces its CSV row")
    parser.add_argument("--approval-timeout", type=float, default=3600.0, metavar="SECONDS",
                        help="how long a round waits for hospitals whose data steward has not yet approved the plan "
                        "(or whose dataset has no privacy budget yet); the aggregator prints who is pending and the "
                        "exact command each must run, and starts the round as soon as enough have acted "
                        "(default 3600)")
    parser.add_argument("--no-round-metrics", action="store_true",
                        help="do not write the per-round CSV and TensorBoard files")
    add_operator_argument(parser, "the coordinator starting this plan (recorded as plan.started)")
    parser.set_defaults(func=run)


def _secure_aggregation_summary(plan: Any, silos: tuple[str, ...]) -> dict[str, Any]:
    """What the run's secure aggregation guaranteed (the same statement stewards approved)."""
    from healthfed_common.secagg_statement import secure_aggregation_statement

    spec = plan.secure_aggregation
    statement = secure_aggregation_statement(plan)
    if spec.protocol == "none":
        return {**statement, "note": "integer update parts were summed in plain by the aggregator"}
    from healthfed_common.secagg import PROTOCOL_NAME

    return {
        **statement,
        "implementation": PROTOCOL_NAME,
        "participants_per_round": len(plan.cohort),
        "neighbours": plan.secagg_graph.degree,
    }


def _audit_verdicts(state_dir: Path) -> dict[str, str]:
    """The aggregator's own audit log verified as `compliance verify` would (with the silos'
    checkpoints it witnessed counted); each hospital verifies its own log where it lives."""
    from compliance.errors import ComplianceError
    from compliance.node_check import check_log
    from compliance.node_dir import NodePaths
    from compliance.witness import WitnessStore

    node = NodePaths(state_dir)
    try:
        result = check_log(node.audit_db, node, None, None).result
    except (ComplianceError, OSError) as error:
        return {"aggregator": f"NOT VERIFIED ({error})"}
    verdicts = {"aggregator": f"VERIFIED ({result.entries} entries)" if result.ok
                else f"FAILED at entry {result.problem.index if result.problem else '?'}"}
    if node.witness_db.is_file():
        try:
            with WitnessStore.open(node.witness_db) as witness:
                for origin in witness.origins():
                    latest = witness.latest(origin)
                    if latest is not None:
                        verdicts[origin] = f"witnessed up to {latest.size} entries (verified at the hospital)"
        except (ComplianceError, OSError, sqlite3.Error) as error:
            verdicts["witness"] = f"unreadable ({error})"
    return verdicts


def _refused(error: Exception) -> int:
    """A coded refusal (or the operating system's own words for a path problem), exit 1."""
    code = getattr(error, "code", None)
    print(f"aggregator run: refused [{code}]: {error}" if code else f"aggregator run: {error}", file=sys.stderr)
    return 1


def run(args: argparse.Namespace) -> int:
    # Imported here, not at the top: the coordinator and the metrics release load TensorFlow
    # (~10 s), and `aggregator --help` registers this module too (tests/core/test_cli_startup.py).
    from aggregator.config import load_aggregator_config
    from aggregator.progress import RunDisplay
    from healthfed_common.errors import HealthFedError
    from healthfed_common.json_logging import configure_logging
    from healthfed_common.node_log import attach_log_file, route_noise_to_file

    try:  # before anything loads: starting a plan is a person's decision, and the log names them
        operator = operator_from(args)
        config = load_aggregator_config(args.config)
    except (HealthFedError, OSError) as error:
        return _refused(error)
    # Before TensorFlow loads (the metrics release and the coordinator below): its, absl's and
    # gRPC's own output goes to the log file; the console keeps HealthFed's messages.
    log_file = config.state_dir / LOG_FILE_NAME
    try:
        route_noise_to_file(log_file)
    except OSError as error:
        print(f"aggregator run: refused [PATH_UNUSABLE]: cannot write the log file {log_file} "
              f"({error.strerror or type(error).__name__})", file=sys.stderr)
        return 1
    configure_logging(args.log_format == "json", "aggregator")
    attach_log_file(log_file)
    logging.getLogger("healthfed.aggregator").info("log file (with TensorFlow's and gRPC's own messages): %s",
                                                   log_file)
    from aggregator.audit import AggregatorAudit
    from aggregator.coordinator import Coordinator, PlanFailed
    from aggregator.enrolment import plan_with_enrolled_cohort
    from aggregator.limits import submit_limit_bytes
    from aggregator.metrics import AggregatorMetrics
    from aggregator.metrics_release import RoundMetricsRelease, RoundMetricsUnusable, plan_metrics_dir
    from aggregator.server import FederationService, start_server
    from aggregator.state_store import open_state_store
    from aggregator.task_board import TaskBoard
    from healthfed_common.plan import parse_plan, plan_summary

    try:
        plan = parse_plan(args.plan.read_bytes(), source=str(args.plan))
        # a secure-aggregation plan without a cohort runs with the enrolled hospitals' own keys
        plan = plan_with_enrolled_cohort(config, plan, say=lambda line: print(line, flush=True))
        display = RunDisplay(plan.rounds)
        # the plan exactly as offered (with its cohort): what stewards approve by hash
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "plan.json").write_bytes(plan.canonical_bytes())
        print(f"plan {plan.name}: hash {plan.plan_hash} (written to {args.out / 'plan.json'})", flush=True)
        store = open_state_store(config.state_database())
    except (HealthFedError, OSError) as error:
        return _refused(error)
    # under secure aggregation only the cohort takes part; silos left out above are not waited for
    silos = frozenset(plan.cohort_ids) if plan.cohort and plan.secure_aggregation.protocol != "none" \
        else frozenset(config.silos)
    releaser: RoundMetricsRelease | None = None
    if not args.no_round_metrics:
        directory = plan_metrics_dir(args.round_metrics_dir or config.state_dir / "metrics", plan.plan_hash)
        try:
            releaser = RoundMetricsRelease(directory, warn=lambda line: print(line, flush=True))
        except (RoundMetricsUnusable, OSError) as error:
            print(f"aggregator run: {error}", file=sys.stderr)
            return 1
        print(f"round metrics: {releaser.csv_path} and TensorBoard logdir {releaser.tensorboard_dir}", flush=True)
    audit = AggregatorAudit(config.state_dir)
    board = TaskBoard()
    metrics = AggregatorMetrics(config.federation, enrolled=set(silos))
    metrics_server = metrics.serve(args.metrics_port, args.metrics_address) if args.metrics_port is not None else None

    def refused(who: str, code: str, message: str) -> None:
        metrics.connection_refused(who, code, message)
        audit.record("connection.refused", actor=who, outcome="minor_failure", requestor=True,
                     detail={"code": code, "reason": message})

    service = FederationService(board, store, frozenset(config.silos), on_refused_connection=refused,
                                witness=audit.exchange, metrics=metrics)
    server, port = start_server(config, service)
    # recorded once the plan is being served (a failed bind above starts nothing)
    audit.record("plan.started", actor=operator, detail=plan_summary(plan) | {"out": str(args.out)})
    print(f"aggregator listening on port {port} (mutual TLS, federation {config.federation})", flush=True)
    stop: dict[str, int | None] = {"signal": None}

    def on_signal(signum: int, _frame: Any) -> None:
        stop["signal"] = signum
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    started = time.time()
    status = 0
    report: dict[str, Any] = {}
    try:
        coordinator = Coordinator(
            plan, board, store, silos, progress=display.say, on_round_summary=display.round_completed,
            audit=audit, metrics=metrics, on_round=releaser.release_round if releaser is not None else None,
            approval_wait_s=args.approval_timeout, plan_cache_dir=config.state_dir / "plan-cache",
        )
        # refuse any Submit larger than this plan's largest answer before decoding it
        service.set_submit_limit(submit_limit_bytes(plan, coordinator.computations, len(config.silos)))
        result = coordinator.run(export_dir=args.out / "model")
        report = result.__dict__ | {"status": "completed"}
        metrics.plan_finished("completed")
    except PlanFailed as failure:
        print(f"aggregator run: {failure}", file=sys.stderr, flush=True)
        report = coordinator.report.__dict__ | {"status": "failed", "error": str(failure)}
        metrics.plan_finished("failed")
        status = 1
    except KeyboardInterrupt:
        display.close()
        print("aggregator run: interrupted; the plan resumes from its last checkpoint on restart", file=sys.stderr)
        server.stop(grace=1).wait()
        store.close()
        audit.close()
        return 1
    report |= {
        "duration_s": round(time.time() - started, 3),
        "plan_hash": plan.plan_hash,
        "silos": sorted(silos),
        "secure_aggregation": plan.secure_aggregation.protocol,
        "secure_aggregation_details": _secure_aggregation_summary(plan, tuple(sorted(silos))),
        "fingerprint": coordinator.computations.fingerprint,
        "round_metrics_files": None if releaser is None else
        {"csv": str(releaser.csv_path), "tensorboard": str(releaser.tensorboard_dir)},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "run-report.json").write_text(json.dumps(report, indent=2, default=str))
    display.close()
    verdicts = _audit_verdicts(config.state_dir) if status == 0 else {}
    print(closing_line(report.get("model_path"), str(args.out), verdicts), flush=True)
    try:
        time.sleep(max(args.linger, 0.0))
    except KeyboardInterrupt:
        pass
    server.stop(grace=1).wait()
    store.close()
    audit.close()
    if metrics_server is not None:
        metrics_server.close()
    return status
