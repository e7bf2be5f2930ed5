"""Checking a plan before anything runs, without TensorFlow: schema (each problem named by
its field, with a suggestion for a misspelt key), the model id, the cohort and
secure-aggregation threshold rules against the federation's enrolled hospitals, and the
features against hospitals' dataset policies (their allow-lists). Answers in about a
second, so a typo costs one command, not an aggregator start and a TensorFlow import.

The dataset policy belongs to the silo (`silo_node.datasets.policy`), which the aggregator
must not import; the allow-list part of it (features, transforms, categories, label) is read
here from the YAML, and a test checks that it agrees with the silo's own `check_plan`.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from healthfed_common import plan as plan_schema
from healthfed_common.plan import Plan

# Model ids and kinds of healthfed_common.models.MODEL_REGISTRY (which imports TensorFlow);
# tests/core/test_plan_cli.py checks that the two agree.
KNOWN_MODELS: dict[str, str] = {"logistic_regression": "tabular", "mlp": "tabular", "small_cnn": "image"}
ERROR, WARNING = "error", "warning"


@dataclass(frozen=True)
class Finding:
    """One problem: `level` error (the plan cannot run as written) or warning (it runs, but
    something will likely refuse or surprise), a stable code, the field, and the message."""

    level: str
    code: str
    where: str
    message: str

    def line(self) -> str:
        return f"{self.level} [{self.code}] {self.where}: {self.message}"


def _all_field_names() -> set[str]:
    names: set[str] = set()
    for value in vars(plan_schema).values():
        if isinstance(value, type) and issubclass(value, BaseModel) and value.__module__ == plan_schema.__name__:
            names |= set(value.model_fields)
    return names


def _location(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "plan"


def schema_findings(document: object) -> tuple[Plan | None, list[Finding]]:
    """The validated plan, or every schema problem with a code per kind: PLAN_UNKNOWN_FIELD
    (with the closest known name), PLAN_MISSING_FIELD, PLAN_BAD_VALUE, PLAN_RULE."""
    if not isinstance(document, dict):
        return None, [Finding(ERROR, "PLAN_NOT_AN_OBJECT", "plan", "a plan is a JSON object of keys and values")]
    try:
        return Plan.model_validate(document), []
    except ValidationError as error:
        known = _all_field_names()
        findings = []
        for problem in error.errors():
            loc = tuple(problem["loc"])
            where = _location(loc)
            kind = problem["type"]
            if kind == "extra_forbidden":
                close = difflib.get_close_matches(str(loc[-1]), sorted(known), n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                findings.append(Finding(ERROR, "PLAN_UNKNOWN_FIELD", where, f"unknown field {loc[-1]!r}{hint}"))
            elif kind == "missing":
                findings.append(Finding(ERROR, "PLAN_MISSING_FIELD", where, "required field is missing"))
            elif kind == "value_error":
                findings.append(Finding(ERROR, "PLAN_RULE", where, str(problem["msg"]).removeprefix("Value error, ")))
            else:
                findings.append(Finding(ERROR, "PLAN_BAD_VALUE", where, str(problem["msg"])))
        return None, findings


def load_plan_document(path: Path) -> tuple[object | None, list[Finding]]:
    """The JSON document, or a finding saying why the file cannot be used."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, [Finding(ERROR, "PLAN_UNREADABLE", str(path), "file not found")]
    except IsADirectoryError:
        return None, [Finding(ERROR, "PLAN_UNREADABLE", str(path), "is a folder; pass the plan's JSON file")]
    except (OSError, UnicodeDecodeError) as error:
        return None, [Finding(ERROR, "PLAN_UNREADABLE", str(path), f"cannot be read ({type(error).__name__})")]
    try:
        return json.loads(text), []
    except json.JSONDecodeError as error:
        return None, [Finding(ERROR, "PLAN_NOT_JSON", str(path),
                              f"not valid JSON at line {error.lineno}, column {error.colno}: {error.msg}")]


def model_findings(plan: Plan) -> list[Finding]:
    kind = KNOWN_MODELS.get(plan.model.id)
    if kind is None:
        return [Finding(ERROR, "UNKNOWN_MODEL", "model.id", f"{plan.model.id!r} is not in the model registry "
                        f"({', '.join(sorted(KNOWN_MODELS))})")]
    if kind == "image" and plan.model.image_size is None:
        return [Finding(ERROR, "PLAN_RULE", "model.image_size", f"{plan.model.id} needs image_size")]
    return []


def privacy_findings(plan: Plan) -> list[Finding]:
    """What silos with the default approval policy (DP and secure aggregation required) refuse."""
    findings = []
    if plan.dp is None:
        findings.append(Finding(WARNING, "PLAN_WITHOUT_DP", "dp", "no differential privacy: hospitals whose approval "
                                "policy requires DP (the default) refuse this plan"))
    if plan.secure_aggregation.protocol == "none":
        findings.append(Finding(WARNING, "PLAN_WITHOUT_SECURE_AGGREGATION", "secure_aggregation",
                                "updates are summed in plain by the aggregator; hospitals refuse this unless their "
                                "approval policy sets require_secure_aggregation: false"))
    return findings


def cohort_findings(plan: Plan, federation_silos: tuple[str, ...] | None,
                    enrolled: tuple[plan_schema.CohortMember, ...] | None) -> list[Finding]:
    """The cohort against the federation (with aggregator.yaml): named silos exist, and the
    threshold rules hold for the cohort `aggregator run` will use (the plan's own, or the
    enrolled hospitals when the plan names none)."""
    findings: list[Finding] = []
    if federation_silos is not None:
        for member in plan.cohort:
            if member.silo_id not in federation_silos:
                findings.append(Finding(ERROR, "PLAN_COHORT_UNKNOWN_SILO", "cohort",
                                        f"{member.silo_id!r} is not a silo of this federation "
                                        f"({', '.join(federation_silos)})"))
        if plan.min_silos_per_round > len(federation_silos):
            findings.append(Finding(ERROR, "PLAN_RULE", "min_silos_per_round",
                                    f"{plan.min_silos_per_round} exceeds the federation's {len(federation_silos)} silos"))
    if plan.secure_aggregation.protocol != "none" and not plan.cohort:
        if enrolled is None:
            findings.append(Finding(WARNING, "PLAN_COHORT_FROM_ENROLMENT", "cohort",
                                    "empty: `aggregator run` fills it with the enrolled hospitals' keys (pass --config "
                                    "aggregator.yaml to check the threshold rules against them now)"))
        else:
            document = plan.model_dump(mode="json") | {"cohort": [m.model_dump(mode="json") for m in enrolled]}
            _, problems = schema_findings(document)
            findings += [Finding(ERROR, p.code, p.where, f"{p.message} (with the {len(enrolled)} enrolled hospitals "
                                 "as cohort)") for p in problems]
    return findings


@dataclass(frozen=True)
class AllowList:
    """The part of a hospital's dataset policy a plan is judged against."""

    source: str
    label: str
    features: dict[str, tuple[tuple[str, ...], tuple[str, ...] | None]]  # name -> (transforms, categories)
    bounded: frozenset[str] = frozenset()  # features with public `bounds` (standardisable under DP)


def load_allow_list(path: Path) -> tuple[AllowList | None, list[Finding]]:
    where = str(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        return None, [Finding(ERROR, "POLICY_UNREADABLE", where, f"cannot read the dataset policy ({type(error).__name__})")]
    features = document.get("features") if isinstance(document, dict) else None
    label = document.get("label") if isinstance(document, dict) else None
    if not isinstance(features, dict) or not isinstance(label, str):
        return None, [Finding(ERROR, "POLICY_INVALID", where, "a dataset policy has `features:` (a mapping) and `label:`")]
    allowed: dict[str, tuple[tuple[str, ...], tuple[str, ...] | None]] = {}
    bounded: set[str] = set()
    for name, spec in features.items():
        spec = spec if isinstance(spec, dict) else {}
        transforms = tuple(str(t) for t in spec.get("transforms") or ())
        categories = spec.get("categories")
        allowed[str(name)] = (transforms, tuple(str(c) for c in categories) if isinstance(categories, list) else None)
        if spec.get("bounds") is not None:
            bounded.add(str(name))
    return AllowList(where, label, allowed, frozenset(bounded)), []


def allow_list_findings(plan: Plan, allow: AllowList) -> list[Finding]:
    """Every feature, transform, category or label a hospital with this policy would refuse
    (FEATURE_NOT_ALLOWED, the code the silo answers with)."""
    findings = []
    if plan.label.name != allow.label:
        findings.append(Finding(ERROR, "FEATURE_NOT_ALLOWED", "label.name",
                                f"{plan.label.name!r} is not the dataset's label ({allow.label!r}) in {allow.source}"))
    for index, spec in enumerate(plan.features):
        where = f"features[{index}] {spec.name}"
        if spec.name not in allow.features:
            close = difflib.get_close_matches(spec.name, list(allow.features), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            findings.append(Finding(ERROR, "FEATURE_NOT_ALLOWED", where, f"not in the allow-list of {allow.source}{hint}"))
            continue
        transforms, categories = allow.features[spec.name]
        if spec.transform not in transforms:
            findings.append(Finding(ERROR, "FEATURE_NOT_ALLOWED", where, f"transform {spec.transform!r} is not allowed "
                                    f"by {allow.source} (allowed: {', '.join(transforms) or 'none'})"))
        elif spec.categories is not None and categories is not None:
            extra = sorted(set(spec.categories) - set(categories))
            if extra:
                findings.append(Finding(ERROR, "FEATURE_NOT_ALLOWED", where,
                                        f"{len(extra)} categories are not in the allow-list of {allow.source}"))
        kind = "a DP plan" if plan.dp is not None else "a public_bounds plan"
        if plan.uses_public_bounds and spec.standardize_indicators:
            findings.append(Finding(ERROR, "NON_PRIVATE_PREPROCESSING", where, "standardize_indicators uses the "
                                    f"dataset's own mean and spread, which {kind} cannot use"))
        elif plan.uses_public_bounds and spec.transform == "standardize" and spec.name not in allow.bounded:
            findings.append(Finding(ERROR, "NON_PRIVATE_PREPROCESSING", where, f"{kind} standardises only with "
                                    f"public bounds, and {allow.source} declares none for it (the hospital adds "
                                    "`bounds: [low, high]`, or plan the feature with transform identity)"))
    return findings


def dp_summary(plan: Plan) -> str:
    if plan.dp is None:
        return "no DP (epsilon = infinity per hospital)"
    return (f"DP-SGD, epsilon {plan.dp.target_epsilon:g}, delta {plan.dp.target_delta:g} per hospital for the "
            f"whole plan ({plan.dp.accountant} accountant)")
