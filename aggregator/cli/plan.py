"""`aggregator plan init` and `aggregator plan validate`: write a starting plan and check one,
in about a second (no TensorFlow on these paths; `aggregator run` is the one that loads it).

Exit codes: 0 ok (warnings allowed), 1 the plan has errors or the file cannot be written,
2 usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from aggregator.errors import AggregatorError
from healthfed_common.errors import HealthFedError
from aggregator.plan_check import (
    ERROR, KNOWN_MODELS, AllowList, Finding, allow_list_findings, cohort_findings, dp_summary, load_allow_list,
    load_plan_document, model_findings, privacy_findings, schema_findings,
)

_GUIDANCE = """\
What each part means (JSON has no comments, so here):
  name / purpose      shown to every hospital's data steward when they approve the plan
  dataset             the name each hospital registered its export under (`silo-node data add NAME ...`)
  features            model inputs, in this order; transform standardize | identity | one_hot (with
                      categories) | year; each must be in every hospital's dataset-policy allow-list
  label               the outcome column; a record is positive when its value is in positive_values
  model               id from the registry: {models}
  rounds, local_epochs, batch_size, client_optimizer, server_optimizer: the training schedule
  min_silos_per_round hospitals needed per round; round_deadline_s how long a round waits for them
  dp                  record-level DP-SGD; target_epsilon is charged to each hospital's privacy ledger
                      (remove `dp` only for hospitals whose approval policy allows non-private plans);
                      under DP a standardize feature needs public `bounds` in each hospital's policy
  secure_aggregation  secagg / secagg_plus: the aggregator learns only the sum of the updates; the
                      cohort (each hospital pinned to its signing key) is filled by `aggregator run`
                      from the enrolment records when left empty
Next:
  aggregator plan validate {out} --kit-policy dataset-policy.yaml --config aggregator.yaml
  aggregator run --config aggregator.yaml --plan {out} --out runs/{name}"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "plan", help="write a starting plan, or check one (fast, no TensorFlow)",
        description="Plans without surprises: `init` writes a valid starting plan, `validate` checks a plan "
        "before `aggregator run` does.",
        epilog="Exit codes: 0 ok (warnings allowed), 1 errors found or file not written, 2 usage error.",
    )
    commands = parser.add_subparsers(dest="plan_command", required=True, metavar="ACTION")

    init = commands.add_parser(
        "init", help="write a valid starting plan and explain each part",
        description="Writes a plan JSON that passes validation, from the options given (features and label "
        "from a hospital's dataset policy with --kit-policy), and prints what each part means.",
        epilog="Example: aggregator plan init --out plan.json --dataset heart --features age,chol,sex:one_hot=0|1 "
        "--label outcome",
    )
    init.add_argument("--out", type=Path, required=True, metavar="FILE", help="where to write the plan (JSON)")
    init.add_argument("--name", default=None, help="plan name (default: from the file name)")
    init.add_argument("--purpose", default="", help="why this model is trained (shown to data stewards)")
    init.add_argument("--dataset", default=None, help="dataset name the hospitals registered (default: my_dataset)")
    init.add_argument("--features", default=None, metavar="LIST",
                      help="comma-separated NAME[:TRANSFORM[=CAT|CAT...]], e.g. age,chol:identity,sex:one_hot=F|M "
                      "(default transform standardize)")
    init.add_argument("--label", default=None, help="label column")
    init.add_argument("--positive-values", default="1", metavar="LIST", help="label values counted positive (default 1)")
    init.add_argument("--kit-policy", type=Path, default=None, metavar="FILE",
                      help="a hospital's dataset policy: features and label default to its allow-list")
    init.add_argument("--model", default="logistic_regression", choices=sorted(k for k, v in KNOWN_MODELS.items()
                                                                               if v == "tabular"))
    init.add_argument("--rounds", type=int, default=10)
    init.add_argument("--min-silos", type=int, default=2, help="hospitals needed per round (default 2)")
    init.add_argument("--epsilon", type=float, default=3.0,
                      help="DP epsilon per hospital for the whole plan (default 3; 0 = no DP)")
    init.add_argument("--delta", type=float, default=1e-5, help="DP delta (default 1e-5)")
    init.add_argument("--secure-aggregation", default="secagg", choices=("secagg", "secagg_plus", "none"))
    init.add_argument("--force", action="store_true", help="overwrite an existing file")
    init.set_defaults(func=run_init)

    validate = commands.add_parser(
        "validate", help="check a plan: schema, model, cohort, thresholds, features against allow-lists",
        description="Checks PLAN without loading TensorFlow: every schema problem named by field (a misspelt key "
        "with the closest known one), the model id, the cohort and secure-aggregation threshold rules (against "
        "the enrolled hospitals with --config), and the features and label against each --kit-policy. Prints "
        "the plan hash the hospitals will approve.",
    )
    validate.add_argument("plan", type=Path, metavar="PLAN", help="plan JSON file")
    validate.add_argument("--kit-policy", type=Path, action="append", default=[], metavar="FILE",
                          help="a hospital's dataset policy (YAML) to check features and label against; repeatable")
    validate.add_argument("--config", type=Path, default=None, metavar="FILE",
                          help="aggregator.yaml: check the cohort against the federation and its enrolled hospitals")
    validate.set_defaults(func=run_validate)


class _UsageProblem(AggregatorError, ValueError):
    """An option value that cannot become a plan (reported with exit 1, coded)."""


def _parse_features(text: str) -> list[dict[str, Any]]:
    features = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        match = re.fullmatch(r"([^:=|]+)(?::(standardize|identity|one_hot|year)(?:=(.+))?)?", item)
        if not match:
            raise _UsageProblem(f"--features: {item!r} is not NAME[:TRANSFORM[=CAT|CAT]] "
                                "(transforms: standardize, identity, one_hot, year)")
        name, transform, categories = match.group(1), match.group(2) or "standardize", match.group(3)
        feature: dict[str, Any] = {"name": name, "transform": transform}
        if categories is not None:
            feature["categories"] = categories.split("|")
        features.append(feature)
    if not features:
        raise _UsageProblem("--features: no feature named")
    return features


def _features_from_allow_list(allow: AllowList, dp: bool) -> tuple[list[dict[str, Any]], list[str]]:
    """The policy's features with their first allowed transform; under DP, `standardize`
    only where the policy declares public bounds (else identity when allowed)."""
    features, skipped = [], []
    for name, (transforms, categories) in allow.features.items():
        if not transforms:
            continue
        usable = [t for t in transforms if not (dp and t == "standardize" and name not in allow.bounded)]
        if not usable:
            skipped.append(f"{name} (a DP plan can standardise it only once the policy declares public bounds)")
            continue
        transform = usable[0]
        if transform == "one_hot":
            if not categories:
                skipped.append(f"{name} (one_hot without categories in the policy: add --features {name}:one_hot=A|B)")
                continue
            features.append({"name": name, "transform": "one_hot", "categories": list(categories)})
        else:
            features.append({"name": name, "transform": transform})
    return features, skipped


def _write_new(path: Path, text: str, force: bool) -> None:
    """Atomically, and never over an existing file unless --force."""
    if path.exists() and not force:
        raise FileExistsError(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


def _refuse(command: str, code: str, message: str) -> int:
    print(f"aggregator plan {command}: refused [{code}]: {message}", file=sys.stderr)
    return 1


def run_init(args: argparse.Namespace) -> int:
    notes: list[str] = []
    allow: AllowList | None = None
    if args.kit_policy is not None:
        allow, problems = load_allow_list(args.kit_policy)
        if allow is None:
            return _refuse("init", problems[0].code, problems[0].line())
    try:
        if args.features:
            features = _parse_features(args.features)
        elif allow is not None:
            features, skipped = _features_from_allow_list(allow, args.epsilon > 0)
            notes += [f"left out {s}" for s in skipped]
        else:
            features = [{"name": "feature_a", "transform": "standardize"}, {"name": "feature_b", "transform": "standardize"}]
            notes.append("features feature_a, feature_b and label outcome are placeholders: replace them with your "
                         "columns (or pass --features/--label, or --kit-policy)")
    except _UsageProblem as problem:
        return _refuse("init", "PLAN_OPTION_INVALID", str(problem))
    name = args.name or re.sub(r"[^A-Za-z0-9_.\-]", "_", args.out.stem).lstrip("_.-") or "plan"
    if not name[0].isalpha():
        name = f"plan_{name}"
    document: dict[str, Any] = {
        "name": name[:64],
        "purpose": args.purpose,
        "dataset": args.dataset or "my_dataset",
        "model": {"id": args.model},
        "features": features,
        "label": {"name": args.label or (allow.label if allow else "outcome"),
                  "positive_values": [v for v in args.positive_values.split(",") if v]},
        "client_optimizer": {"name": "sgd", "learning_rate": 0.1},
        "server_optimizer": {"name": "sgd", "learning_rate": 1.0},
        "local_epochs": 1,
        "batch_size": 32,
        "rounds": args.rounds,
        "min_silos_per_round": args.min_silos,
        "round_deadline_s": 300.0,
        "secure_aggregation": {"protocol": args.secure_aggregation},
        "seeds": {"model_init": 0, "data_order": 0},
    }
    if args.epsilon > 0:
        document["dp"] = {"target_epsilon": args.epsilon, "target_delta": args.delta, "l2_norm_clip": 1.0}
    if not args.dataset:
        notes.append("dataset my_dataset is a placeholder: use the name the hospitals registered (--dataset)")
    plan, problems = schema_findings(document)
    if plan is None:
        return _refuse("init", problems[0].code, "; ".join(p.line() for p in problems))
    try:
        _write_new(args.out, json.dumps(plan.model_dump(mode="json", exclude_defaults=False), indent=2) + "\n",
                   args.force)
    except FileExistsError:
        return _refuse("init", "PLAN_EXISTS", f"{args.out} exists; choose another --out or pass --force")
    except OSError as error:
        return _refuse("init", "PATH_UNUSABLE", f"cannot write {args.out} ({error.strerror or type(error).__name__})")
    print(f"wrote {args.out}: plan {plan.name!r}, {len(plan.features)} features, label {plan.label.name!r}, "
          f"{plan.rounds} rounds, {dp_summary(plan)}, secure aggregation {plan.secure_aggregation.protocol}")
    for note in notes:
        print(f"note: {note}")
    print(_GUIDANCE.format(models=", ".join(sorted(KNOWN_MODELS)), out=args.out, name=plan.name))
    return 0


def run_validate(args: argparse.Namespace) -> int:
    document, findings = load_plan_document(args.plan)
    plan = None
    if document is not None:
        plan, findings = schema_findings(document)
    offered = plan  # the plan as `aggregator run` will offer it (with the enrolled cohort filled in)
    if plan is not None:
        findings += model_findings(plan) + privacy_findings(plan)
        config = None
        if args.config is not None:
            # imported here: the state store and enrolment modules cost a second that a plain
            # schema check should not pay
            from aggregator.config import load_aggregator_config
            from aggregator.enrolment import enrolled_cohort, plan_with_enrolled_cohort

            try:
                config = load_aggregator_config(args.config)
                enrolled = enrolled_cohort(config)
            except (HealthFedError, OSError, ValueError) as error:
                findings.append(Finding(ERROR, getattr(error, "code", "CONFIG_INVALID"), str(args.config), str(error)))
                config = None
        findings += cohort_findings(plan, config.silos if config else None, enrolled if config else None)
        for policy_path in args.kit_policy:
            allow, problems = load_allow_list(policy_path)
            findings += problems if allow is None else allow_list_findings(plan, allow)
        if config is not None and not any(f.level == ERROR for f in findings):
            try:
                offered = plan_with_enrolled_cohort(config, plan, say=lambda _line: None)
            except HealthFedError as error:
                findings.append(Finding(ERROR, error.code, "cohort", str(error)))
    for finding in findings:
        print(finding.line(), file=sys.stderr if finding.level == ERROR else sys.stdout)
    errors = [f for f in findings if f.level == ERROR]
    if errors or plan is None or offered is None:
        print(f"{args.plan}: {len(errors)} error(s); `aggregator run` would refuse this plan", file=sys.stderr)
        return 1
    if offered is plan and plan.secure_aggregation.protocol != "none" and not plan.cohort:
        hash_note = (f"hash of this file {plan.plan_hash}; `aggregator run` fills in the cohort, which changes the "
                     "hash: hospitals approve the hash it prints")
    else:
        filled = " (with the enrolled cohort, as `aggregator run` will offer it)" if offered is not plan else ""
        hash_note = (f"hash {offered.plan_hash}{filled}: hospitals approve it with "
                     f"`silo-node plans approve {offered.plan_hash[:12]}`")
    print(f"{args.plan}: valid. plan {plan.name!r}; {dp_summary(plan)}; {hash_note}")
    return 0
