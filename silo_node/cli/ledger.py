"""`silo-node ledger`: show and set the per-dataset privacy budgets.

    silo-node ledger show [--dataset NAME] [--json]
    silo-node ledger set-budget NAME --epsilon E --delta D

Both take `--state-dir DIR` (default: $HEALTHFED_SILO_STATE or ./silo-state); the ledger
lives in DIR/silo.sqlite3. All logic is in `silo_node.privacy_ledger`.
Exit codes: 0 ok, 1 refused/failed (message on stderr), 2 usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

DB_FILE = "silo.sqlite3"


def _default_state_dir() -> str:
    return os.environ.get("HEALTHFED_SILO_STATE", "./silo-state")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "ledger", help="show spent/remaining privacy budget per dataset; set budgets"
    )
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="silo state directory (default $HEALTHFED_SILO_STATE or ./silo-state)")
    actions = parser.add_subparsers(dest="ledger_action", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="spent and remaining (epsilon, delta) per dataset")
    show.add_argument("--dataset", default=None, help="only this dataset")
    show.add_argument("--charges", action="store_true", help="also list every charge")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    budget = actions.add_parser("set-budget", help="set a dataset's total privacy budget")
    budget.add_argument("dataset")
    budget.add_argument("--epsilon", type=float, required=True)
    budget.add_argument("--delta", type=float, required=True)
    for sub in (show, budget):
        sub.add_argument("--state-dir", type=Path, default=argparse.SUPPRESS,
                         help=argparse.SUPPRESS)
    parser.set_defaults(func=handler)


def handler(args: argparse.Namespace) -> int:
    from silo_node.privacy_ledger import PrivacyLedger, PrivacyLedgerError
    from silo_node.storage import open_silo_db

    state_dir = Path(args.state_dir or _default_state_dir())
    db_path = state_dir / DB_FILE
    if args.ledger_action == "show" and not db_path.exists():
        print(f"no silo database at {db_path}", file=sys.stderr)
        return 1
    conn = open_silo_db(db_path)
    try:
        ledger = PrivacyLedger(conn, actor="cli")
        if args.ledger_action == "set-budget":
            budget = ledger.set_budget(args.dataset, args.epsilon, args.delta)
            print(f"budget of {budget.dataset}: epsilon={budget.epsilon:g} delta={budget.delta:g}")
            return 0
        return _show(ledger, args)
    except (PrivacyLedgerError, ValueError) as error:
        print(f"error [{getattr(error, 'code', 'ERROR')}]: {error}", file=sys.stderr)
        return 1
    finally:
        conn.close()


def _show(ledger: Any, args: argparse.Namespace) -> int:
    from silo_node.privacy_ledger import BudgetNotSet

    names = [args.dataset] if args.dataset else ledger.datasets()
    rows: list[dict[str, Any]] = []
    for name in names:
        charges = ledger.charges(name)
        try:
            budget = ledger.budget(name)
        except BudgetNotSet:
            budget = None
        spent_eps, _ = ledger.spent(name) if budget is not None else (float("nan"), 0.0)
        row: dict[str, Any] = {
            "dataset": name,
            "epsilon_budget": budget.epsilon if budget else None,
            "delta_budget": budget.delta if budget else None,
            "epsilon_spent": spent_eps if budget else None,
            "epsilon_remaining": max(0.0, budget.epsilon - spent_eps) if budget else None,
            "accountant": charges[-1].accountant if charges else None,
            "rounds_charged": len(charges),
            "plans": sorted({c.plan_hash for c in charges}),
        }
        if args.charges:
            row["charges"] = [
                {"plan_hash": c.plan_hash, "round": c.round, "epsilon_round": c.epsilon,
                 "epsilon_spent_total": c.epsilon_spent_total, "accountant": c.accountant,
                 "charged_at": c.charged_at}
                for c in charges
            ]
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2, sort_keys=True))
        return 0
    if not rows:
        print("no datasets in the privacy ledger")
        return 0
    print(f"{'dataset':<24} {'eps spent':>10} {'eps budget':>10} {'eps left':>10} {'delta':>8} {'rounds':>6}  acct")
    for r in rows:
        def fmt(v: Any) -> str:
            return "-" if v is None else f"{v:.4g}"
        print(f"{r['dataset']:<24} {fmt(r['epsilon_spent']):>10} {fmt(r['epsilon_budget']):>10} "
              f"{fmt(r['epsilon_remaining']):>10} {fmt(r['delta_budget']):>8} {r['rounds_charged']:>6}  "
              f"{r['accountant'] or '-'}")
        for c in r.get("charges", []):
            print(f"    plan {c['plan_hash'][:12]} round {c['round']:>4}: eps_round={c['epsilon_round']:.4g} "
                  f"total={c['epsilon_spent_total']:.4g}")
    return 0
