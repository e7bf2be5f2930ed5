"""`silo-node plans`: review the training plans the federation has sent this silo."""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compliance.audit_log import AuditLog
from compliance.errors import ComplianceError
from healthfed_common.actors import OperatorRequired
from silo_node.cli.data import add_audited, add_state_dir, audited, fail, open_db
from silo_node.datasets.errors import DataLayerError
from silo_node.policy import ApprovalPolicy

if TYPE_CHECKING:
    from silo_node.approvals import PlanApprovals

POLICY_FILE = "approval-policy.yaml"


def _approvals(args: argparse.Namespace, audit: AuditLog | None = None) -> PlanApprovals:
    from silo_node.approvals import PlanApprovals  # loads pandas: not for `--help`

    path = args.approval_policy or Path(args.state_dir) / POLICY_FILE
    policy = ApprovalPolicy.from_yaml(path) if path.exists() else ApprovalPolicy()
    return PlanApprovals(open_db(args), policy, audit=audit)


def _list(args: argparse.Namespace) -> int:
    records = _approvals(args).list()
    if not records:
        print("no plans received yet")
    for r in records:
        until = f" until {r.expires_at}" if r.expires_at else ""
        print(f"{r.plan_hash[:16]}  {r.status:<8} {r.name:<24} received {r.received_at}"
              f"{f'  {r.reason}' if r.reason else ''}{until}")
    return 0


def _show(args: argparse.Namespace) -> int:
    try:
        approvals = _approvals(args)
        print(approvals.show(args.plan_hash))
        print()
        print(_privacy_statement(args, approvals))
        print("\nDecisions:")
        for at, event, actor, reason in approvals.history(approvals.record(args.plan_hash).plan_hash):
            print(f"  {at}  {event:<9} by {actor}{f'  ({reason})' if reason else ''}")
    except DataLayerError as error:
        return fail(error)
    return 0


def _privacy_statement(args: argparse.Namespace, approvals: PlanApprovals) -> str:
    """The plan's privacy statement, with this silo's calibration and public bounds when the
    plan's dataset is registered here."""
    from healthfed_common.dp.statement import privacy_statement, render_text
    from silo_node.datasets.registry import DatasetRegistry

    plan = approvals.record(args.plan_hash).plan
    size, bounds = None, None
    try:
        info = DatasetRegistry(open_db(args), Path(args.state_dir) / "datasets").show(plan.dataset)
        size = info.n_train if info.kind == "tabular" and info.n_train > 0 else None
        bounds = {name: f.bounds for name, f in info.policy.features.items() if f.bounds is not None}
    except DataLayerError:
        pass  # not registered here: the statement without this silo's numbers
    return render_text(privacy_statement(plan, dataset_size=size, public_bounds=bounds,
                                         max_evaluations=approvals.policy.max_evaluations_per_plan))


def _approve(args: argparse.Namespace) -> int:
    expires = None if args.expires_in_days is None else datetime.now(timezone.utc) + timedelta(days=args.expires_in_days)
    try:
        actor, log = audited(args)
    except (DataLayerError, OperatorRequired, ComplianceError) as error:
        return fail(error)
    try:
        approvals = _approvals(args, log)
        approvals.approve(args.plan_hash, by=actor, expires_at=expires)
        record = approvals.record(args.plan_hash)
    except DataLayerError as error:
        return fail(error)
    finally:
        log.close()
    print(f"approved plan {record.name!r} ({record.plan_hash[:16]})" + (f" until {record.expires_at}" if record.expires_at else ""))
    return 0


def _reject(args: argparse.Namespace) -> int:
    try:
        actor, log = audited(args)
    except (DataLayerError, OperatorRequired, ComplianceError) as error:
        return fail(error)
    try:
        _approvals(args, log).reject(args.plan_hash, by=actor, reason=args.reason)
    except DataLayerError as error:
        return fail(error)
    finally:
        log.close()
    print(f"rejected plan {args.plan_hash}")
    return 0


def register(subparsers: Any) -> None:
    plans = subparsers.add_parser(
        "plans", help="review, approve or reject training plans",
        description="Training plans arrive from the federation as pending. Nothing trains on this "
        "silo's data until a plan is approved here (or by the local approval policy), and a plan "
        "outside the approval policy is refused whoever approves it.",
    )
    commands = plans.add_subparsers(dest="plans_command", required=True, metavar="ACTION")

    def common(parser: argparse.ArgumentParser) -> None:
        add_state_dir(parser)
        parser.add_argument("--approval-policy", type=Path, metavar="FILE",
                            help=f"node approval policy YAML (default: STATE_DIR/{POLICY_FILE}, else built-in limits)")

    listing = commands.add_parser("list", help="list received plans and their status",
                                  description="List received plans: pending, approved, rejected or expired.")
    common(listing)
    listing.set_defaults(func=_list)

    show = commands.add_parser("show", help="explain a plan in plain words",
                               description="Explain what the plan does, with which data, and what leaves the silo.")
    show.add_argument("plan_hash", metavar="HASH", help="plan hash (the first 8+ characters are enough)")
    common(show)
    show.set_defaults(func=_show)

    approve = commands.add_parser("approve", help="approve a plan",
                                  description="Approve a plan so it may train on this silo's data until it expires.")
    approve.add_argument("plan_hash", metavar="HASH")
    add_audited(approve, "the data steward who approves")
    approve.add_argument("--expires-in-days", type=float, metavar="DAYS",
                         help="approval lifetime (default: the policy's approval_lifetime_days)")
    common(approve)
    approve.set_defaults(func=_approve)

    reject = commands.add_parser("reject", help="reject a plan", description="Reject a plan; it will not run here.")
    reject.add_argument("plan_hash", metavar="HASH")
    reject.add_argument("--reason", default="REJECTED_BY_STEWARD", help="short reason code or words (recorded)")
    add_audited(reject, "the data steward who rejects")
    common(reject)
    reject.set_defaults(func=_reject)
