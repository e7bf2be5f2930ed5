"""`aggregator spending`: what each hospital declared it has spent of its privacy budget."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aggregator.config import load_aggregator_config
from aggregator.state_store import open_state_store
from healthfed_common.errors import HealthFedError
from healthfed_common.startup_kit import ConfigInvalid


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "spending",
        help="show each hospital's declared privacy spending per plan",
        description="Silos send, with every DP round's result, what their own privacy ledger says they "
        "have spent on the plan's dataset (epsilon spent and remaining, delta). This lists the latest "
        "declaration per plan and hospital. The silo's ledger is authoritative; this is what it declared.",
    )
    parser.add_argument("--config", type=Path, required=True, help="aggregator.yaml")
    parser.add_argument("--plan-hash", default=None, help="only this plan (full hash)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        config = load_aggregator_config(args.config)
    except ConfigInvalid as error:
        print(f"aggregator spending: {error}", file=sys.stderr)
        return 1
    try:
        with open_state_store(config.state_database()) as store:
            rows = store.declarations(args.plan_hash)
    except HealthFedError as error:
        print(f"aggregator spending: {error}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([dict(zip(("plan_hash", "round", "silo", "epsilon_spent", "epsilon_remaining", "delta"), r))
                          for r in rows], indent=2))
        return 0
    if not rows:
        print("no privacy declarations recorded (plans without DP declare nothing)")
    for plan_hash, round_number, silo, spent, remaining, delta in rows:
        print(f"{plan_hash[:12]}  {silo:<20} after round {round_number:>4}: ε spent {spent:.4f}, "
              f"ε remaining {remaining:.4f}, δ {delta:g}")
    return 0
