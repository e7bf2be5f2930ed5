"""`aggregator plan init` / `validate`: fast (no TensorFlow), every problem named by field with
a code, features judged like the silos judge them."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from aggregator.cli.main import main as aggregator_main
from aggregator.plan_check import KNOWN_MODELS, load_allow_list, allow_list_findings
from healthfed_common.plan import parse_plan
from silo_node.datasets.errors import FeatureNotAllowed
from silo_node.datasets.minimisation import check_plan
from silo_node.datasets.policy import DatasetPolicy

REPO = Path(__file__).resolve().parents[2]

POLICY: dict[str, Any] = {
    "features": {
        "age": {"transforms": ["standardize", "identity"], "bounds": [0, 120]},
        "chol": {"transforms": ["identity"]},
        "sex": {"transforms": ["one_hot"], "categories": ["F", "M"]},
    },
    "label": "outcome",
    "identifiers": {"mrn": "drop"},
}


def _plan(**overrides: Any) -> dict[str, Any]:
    plan: dict[str, Any] = {
        "name": "heart",
        "dataset": "heart",
        "model": {"id": "logistic_regression"},
        "features": [{"name": "age", "transform": "standardize"}, {"name": "sex", "transform": "one_hot",
                                                                   "categories": ["F", "M"]}],
        "label": {"name": "outcome"},
        "client_optimizer": {"name": "sgd", "learning_rate": 0.1},
        "local_epochs": 1,
        "batch_size": 16,
        "rounds": 3,
        "min_silos_per_round": 2,
        "dp": {"target_epsilon": 3.0, "target_delta": 1e-5},
        "secure_aggregation": {"protocol": "secagg"},
    }
    return plan | overrides


def _write(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document) if path.suffix == ".json" else yaml.safe_dump(document))
    return path


def _aggregator(*args: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "aggregator.cli.main", *args], cwd=cwd, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    return result, time.perf_counter() - started


def test_validate_answers_within_two_seconds_without_tensorflow(tmp_path: Path) -> None:
    plan = _write(tmp_path / "plan.json", _plan())
    policy = _write(tmp_path / "policy.yaml", POLICY)
    _aggregator("plan", "validate", str(plan), cwd=tmp_path)  # warm the OS file cache (a loaded CI machine)
    result, seconds = _aggregator("plan", "validate", str(plan), "--kit-policy", str(policy), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "valid" in result.stdout and parse_plan(plan.read_bytes()).plan_hash in result.stdout
    assert seconds < 2.0, f"plan validate took {seconds:.1f}s (did it import TensorFlow?)"
    probe = subprocess.run(
        [sys.executable, "-c", "import sys; from aggregator.cli.main import main\n"
         f"code = main(['plan', 'validate', {str(plan)!r}])\n"
         "print('TF' if 'tensorflow' in sys.modules else 'no TF', code)"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert probe.stdout.strip().splitlines()[-1] == "no TF 0", probe.stdout + probe.stderr


def test_a_typo_is_named_with_a_code_and_the_closest_field(tmp_path: Path) -> None:
    document = _plan()
    document["client_optimiser"] = document.pop("client_optimizer")
    document["dp"]["target_epsilom"] = document["dp"].pop("target_epsilon")
    result, _ = _aggregator("plan", "validate", str(_write(tmp_path / "plan.json", document)), cwd=tmp_path)
    assert result.returncode == 1
    err = result.stderr
    assert "error [PLAN_UNKNOWN_FIELD] client_optimiser: unknown field 'client_optimiser'; did you mean " \
           "'client_optimizer'?" in err
    assert "error [PLAN_UNKNOWN_FIELD] dp.target_epsilom" in err and "'target_epsilon'?" in err
    assert "error [PLAN_MISSING_FIELD] client_optimizer" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("content", "code"),
    [("{not json", "PLAN_NOT_JSON"), ("[1, 2]", "PLAN_NOT_AN_OBJECT"), (None, "PLAN_UNREADABLE")],
)
def test_unusable_plan_files_are_coded(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None,
                                       code: str) -> None:
    path = tmp_path / "plan.json"
    if content is not None:
        path.write_text(content)
    assert aggregator_main(["plan", "validate", str(path if content is not None else tmp_path)]) == 1
    assert f"[{code}]" in capsys.readouterr().err


def test_rules_and_model_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = _plan(model={"id": "resnet"}, straggler_grace_s=500.0, round_deadline_s=100.0)
    assert aggregator_main(["plan", "validate", str(_write(tmp_path / "plan.json", document))]) == 1
    err = capsys.readouterr().err
    assert "[PLAN_RULE]" in err and "straggler_grace_s" in err
    document = _plan(model={"id": "resnet"})
    assert aggregator_main(["plan", "validate", str(_write(tmp_path / "plan.json", document))]) == 1
    assert "error [UNKNOWN_MODEL] model.id: 'resnet'" in capsys.readouterr().err


def test_features_are_judged_like_the_silo_judges_them(tmp_path: Path) -> None:
    """Each plan here is refused by the silo's own check_plan exactly when validate reports
    FEATURE_NOT_ALLOWED, and for the same feature."""
    policy_path = _write(tmp_path / "policy.yaml", POLICY)
    allow, problems = load_allow_list(policy_path)
    assert allow is not None and not problems
    silo_policy = DatasetPolicy.from_yaml(policy_path)
    variants = [
        _plan(),
        _plan(dp=None),
        _plan(features=[{"name": "age", "transform": "identity"}]),
        _plan(features=[{"name": "sex", "transform": "one_hot", "categories": ["F", "M"], "standardize_indicators": True}]),
        _plan(features=[{"name": "agee", "transform": "standardize"}]),
        _plan(features=[{"name": "chol", "transform": "standardize"}]),
        _plan(features=[{"name": "sex", "transform": "one_hot", "categories": ["F", "M", "X"]}]),
        _plan(label={"name": "death"}),
        _plan(features=[{"name": "mrn", "transform": "identity"}]),
    ]
    for document in variants:
        plan = parse_plan(document)
        findings = allow_list_findings(plan, allow)
        try:
            check_plan(plan, silo_policy)
            refused_by_silo = None
        except FeatureNotAllowed as refusal:
            refused_by_silo = refusal.feature
        assert bool(findings) == (refused_by_silo is not None), (document, findings)
        if findings:
            assert any(refused_by_silo in f.where + f.message for f in findings)
            assert {f.code for f in findings} <= {"FEATURE_NOT_ALLOWED", "NON_PRIVATE_PREPROCESSING"}


def test_init_writes_a_valid_plan_from_a_policy_and_refuses_to_overwrite(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    policy = _write(tmp_path / "policy.yaml", POLICY)
    out = tmp_path / "plan.json"
    assert aggregator_main(["plan", "init", "--out", str(out), "--dataset", "heart", "--kit-policy", str(policy)]) == 0
    printed = capsys.readouterr().out
    assert "What each part means" in printed and "aggregator plan validate" in printed
    plan = parse_plan(out.read_bytes())
    assert [(f.name, f.transform) for f in plan.features] == [("age", "standardize"), ("chol", "identity"),
                                                               ("sex", "one_hot")]
    assert plan.label.name == "outcome" and plan.dp is not None and plan.secure_aggregation.protocol == "secagg"
    assert aggregator_main(["plan", "validate", str(out), "--kit-policy", str(policy)]) == 0
    before = out.read_bytes()
    assert aggregator_main(["plan", "init", "--out", str(out), "--features", "x"]) == 1
    assert "[PLAN_EXISTS]" in capsys.readouterr().err and out.read_bytes() == before
    assert aggregator_main(["plan", "init", "--out", str(tmp_path / "b.json"), "--features", "x:cubic"]) == 1
    assert "[PLAN_OPTION_INVALID]" in capsys.readouterr().err
    assert aggregator_main(["plan", "init", "--out", str(tmp_path / "c.json")]) == 0
    assert "placeholders" in capsys.readouterr().out
    parse_plan((tmp_path / "c.json").read_bytes())


def test_cohort_and_threshold_against_the_enrolled_hospitals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from pipelines.local_federation import provision_local_federation

    fed = provision_local_federation(tmp_path / "fed", "plan-check", ["alpha", "bravo", "charlie"], "127.0.0.1:1")
    config = str(fed.aggregator_config)
    plan = _write(tmp_path / "plan.json", _plan(min_silos_per_round=3))
    assert aggregator_main(["plan", "validate", str(plan)]) == 0
    assert "[PLAN_COHORT_FROM_ENROLMENT]" in capsys.readouterr().out
    assert aggregator_main(["plan", "validate", str(plan), "--config", config]) == 0  # t = 3 of 3
    from aggregator.config import load_aggregator_config
    from aggregator.enrolment import plan_with_enrolled_cohort

    as_run = plan_with_enrolled_cohort(load_aggregator_config(fed.aggregator_config), parse_plan(plan.read_bytes()),
                                       say=lambda _line: None)
    assert f"hash {as_run.plan_hash} (with the enrolled cohort" in capsys.readouterr().out
    plan = _write(tmp_path / "plan.json", _plan(min_silos_per_round=3, secure_aggregation={"protocol": "secagg",
                                                                                           "threshold": 2}))
    assert aggregator_main(["plan", "validate", str(plan), "--config", config]) == 1
    err = capsys.readouterr().err
    assert "[PLAN_RULE]" in err and "below min_silos_per_round 3" in err and "3 enrolled hospitals" in err
    plan = _write(tmp_path / "plan.json", _plan(min_silos_per_round=4, secure_aggregation={"protocol": "none"}))
    assert aggregator_main(["plan", "validate", str(plan), "--config", config]) == 1
    assert "exceeds the federation's 3 silos" in capsys.readouterr().err


def test_known_models_match_the_registry() -> None:
    """The registry imports TensorFlow, so plan_check keeps a copy of its ids; read the
    registry's source (without importing it) to keep the copy honest."""
    tree = ast.parse((REPO / "healthfed_common" / "models.py").read_text())
    entries = {
        node.args[0].value: node.args[1].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ModelEntry"
    }
    assert entries == KNOWN_MODELS


def test_readme_references_are_the_generated_ones() -> None:
    """The README's dataset-policy and plan references are rendered from the pydantic models;
    editing a model without regenerating (python -m pipelines.reference_docs --write) fails here."""
    from pipelines.reference_docs import README, readme_section, render

    section = readme_section(README.read_text(encoding="utf-8"))
    assert section == render(), "README reference is stale: run python -m pipelines.reference_docs --write"
    identifiers = next(line for line in section.splitlines() if line.startswith("| `identifiers`"))
    for action in ("drop", "year", "shift_days", "age_90", "zip3"):
        assert f"`{action}`" in identifiers
    for key in ("delimiter", "encoding", "target_epsilon", "min_silos_per_round", "cohort"):
        assert f"| `{key}` |" in section
