"""`silo-node ledger`: show and set the per-dataset privacy budgets.

    silo-node ledger show [--dataset NAME] [--charges] [--json]
    silo-node ledger set-budget NAME --epsilon E --delta D --by PERSON [--config silo.yaml]

Both take `--state-dir DIR` (default: $HEALTHFED_SILO_STATE or ./silo-state); the ledger
lives in DIR/silo.sqlite3. `set-budget` names the person (`--by`, or $HEALTHFED_OPERATOR)
and is written to the node's audit log with the old and new values; it is refused when the
folder has no audit log. All logic is in `silo_node.privacy_ledger`.
Exit codes: 0 ok, 1 refused/failed (coded message on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

DB_FILE = "silo.sqlite3"


def _default_state_dir() -> str:
    return os.environ.get("HEALTHFED_SILO_STATE", "./silo-state")


def register(subparsers: Any) -> None:
    from silo_node.cli.data import add_audited

    parser = subparsers.add_parser(
        "ledger", help="show spent/remaining privacy budget per dataset; set budgets"
    )
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="silo state directory (default $HEALTHFED_SILO_STATE or ./silo-state)")
    actions = parser.add_subparsers(dest="ledger_action", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="spent and remaining (epsilon, delta) per dataset")
    show.add_argument("--dataset", default=None, help="only this dataset")
    show.add_argument("--charges", action="store_true", help="also list every charge and disclosure")
    show.add_argument("--json", action="store_true", help="machine-readable output (infinite epsilon as \"inf\")")
    budget = actions.add_parser(
        "set-budget", help="set a dataset's total privacy budget (audited; delta fixed once anything is charged)"
    )
    budget.add_argument("dataset")
    budget.add_argument("--epsilon", type=float, required=True)
    budget.add_argument("--delta", type=float, required=True)
    add_audited(budget, "the person setting the budget (data steward)")
    for sub in (show, budget):
        sub.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS,
                         help=argparse.SUPPRESS)
    parser.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from compliance.errors import ComplianceError
    from healthfed_common.actors import OperatorRequired
    from silo_node.cli.data import audited
    from silo_node.datasets.errors import DataLayerError
    from silo_node.privacy_ledger import PrivacyLedger, PrivacyLedgerError
    from silo_node.storage import open_silo_db

    state_dir = Path(args.state_dir or _default_state_dir())
    args.state_dir = state_dir
    db_path = state_dir / DB_FILE
    if args.ledger_action == "show" and not db_path.exists():
        print(f"no silo database at {db_path}", file=sys.stderr)
        return 1
    if args.ledger_action == "set-budget":
        try:
            actor, log = audited(args)
        except (DataLayerError, OperatorRequired, ComplianceError) as error:
            print(f"refused [{error.code}]: {error}", file=sys.stderr)
            return 1
        conn = open_silo_db(db_path)
        try:
            ledger = PrivacyLedger(conn, audit=log, actor=actor)
            budget = ledger.set_budget(args.dataset, args.epsilon, args.delta, actor=actor)
        except (PrivacyLedgerError, ComplianceError) as error:
            print(f"refused [{error.code}]: {error}", file=sys.stderr)
            return 1
        finally:
            conn.close()
            log.close()
        shared = "" if budget.dataset == args.dataset else f" (shared: {args.dataset} has the same content)"
        print(f"budget of {budget.dataset}{shared}: epsilon={budget.epsilon:g} delta={budget.delta:g} "
              f"(set by {actor}, recorded in the audit log)")
        return 0
    conn = open_silo_db(db_path)
    try:
        return _show(PrivacyLedger(conn, actor="cli"), args)
    except (PrivacyLedgerError, ValueError) as error:
        print(f"error [{getattr(error, 'code', 'PRIVACY_LEDGER_ERROR')}]: {error}", file=sys.stderr)
        return 1
    finally:
        conn.close()


def _json_number(value: float | None) -> float | str | None:
    """JSON has no infinity: an infinite epsilon (a non-private plan was charged) is "inf"."""
    return "inf" if value is not None and math.isinf(value) else value


def _show(ledger: Any, args: argparse.Namespace) -> int:
    from silo_node.privacy_ledger import BudgetNotSet

    names = [args.dataset] if args.dataset else ledger.datasets()
    rows: list[dict[str, Any]] = []
    for name in names:
        charges = ledger.charges(name)
        disclosures = ledger.disclosures(name)
        try:
            budget = ledger.budget(name)
        except BudgetNotSet:
            budget = None
        spent_eps, _ = ledger.spent(name) if budget is not None else (float("nan"), 0.0)
        row: dict[str, Any] = {
            "dataset": name,
            "privacy_unit": ledger.unit_of(name),
            "epsilon_budget": budget.epsilon if budget else None,
            "delta_budget": budget.delta if budget else None,
            "epsilon_spent": _json_number(spent_eps) if budget else None,
            "epsilon_remaining": max(0.0, budget.epsilon - spent_eps) if budget else None,
            "accountant": charges[-1].accountant if charges else None,
            "rounds_charged": len(charges),
            "non_private_rounds_charged": sum(1 for c in charges if c.non_private),
            "plans": sorted({c.plan_hash for c in charges}),
            # exact (non-DP) metrics released, e.g. evaluations: counted, not in epsilon
            "non_dp_disclosures": len(disclosures),
        }
        if args.charges:
            row["charges"] = [
                {"plan_hash": c.plan_hash, "round": c.round, "epsilon_round": _json_number(c.epsilon),
                 "epsilon_spent_total": _json_number(c.epsilon_spent_total), "accountant": c.accountant,
                 "non_private": c.non_private, "charged_at": c.charged_at}
                for c in charges
            ]
            row["disclosures"] = [
                {"plan_hash": d.plan_hash, "kind": d.kind, "subject_sha256": d.subject_sha256,
                 "released": d.released, "released_at": d.released_at}
                for d in disclosures
            ]
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
        return 0
    if not rows:
        print("no datasets in the privacy ledger")
        return 0
    print(f"{'dataset':<24} {'eps spent':>10} {'eps budget':>10} {'eps left':>10} {'delta':>8} {'rounds':>6} "
          f"{'non-DP':>6}  acct")
    for r in rows:
        print(f"{r['dataset']:<24} {_fmt(r['epsilon_spent']):>10} {_fmt(r['epsilon_budget']):>10} "
              f"{_fmt(r['epsilon_remaining']):>10} {_fmt(r['delta_budget']):>8} {r['rounds_charged']:>6} "
              f"{r['non_dp_disclosures']:>6}  {r['accountant'] or '-'}")
        if r["privacy_unit"] != r["dataset"]:
            print(f"    same content as {r['privacy_unit']}: shares its budget and charges")
        if r["non_private_rounds_charged"]:
            print(f"    {r['non_private_rounds_charged']} round(s) of non-private plans charged as epsilon = ∞")
        if r["non_dp_disclosures"]:
            print(f"    {r['non_dp_disclosures']} non-DP release(s) of exact metrics (evaluations), not in epsilon")
        for c in r.get("charges", []):
            print(f"    plan {c['plan_hash'][:12]} round {c['round']:>4}: eps_round={_fmt(c['epsilon_round'])} "
                  f"total={_fmt(c['epsilon_spent_total'])}")
        for d in r.get("disclosures", []):
            print(f"    plan {d['plan_hash'][:12]} {d['kind']} of model {d['subject_sha256'][:12]}: "
                  f"{json.dumps(d['released'], sort_keys=True)}")
    return 0


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if value == "inf" or (isinstance(value, float) and math.isinf(value)):
        return "∞"
    return f"{value:.4g}"
