"""The model card exported beside the SavedModel and `aggregator predict`.

The card's column order must be exactly the silo training view's (checked against a real
`tabular_view` of the same plan), its preprocessing must reproduce the view's numbers (non-DP
from the hospital's own training records, DP from the policy's public bounds), and `aggregator
predict` must score a CSV as the model scores hand-preprocessed inputs. User mistakes end in a
coded message, never a traceback. Only the end-to-end scoring test imports TensorFlow.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from aggregator.cli.main import main
from aggregator.model_card import (
    BASELINE_UNKNOWN, CARD_FILE, CARD_MARKDOWN, PublicBounds, build_card, input_columns, preprocess, write_card,
)
from healthfed_common.plan import Plan
from healthfed_common.silo_keys import encode_public_key, fingerprint, generate_signing_key
from silo_node.datasets.minimisation import SPLIT_COLUMN
from silo_node.datasets.policy import DatasetPolicy
from silo_node.datasets.view import tabular_view

COHORT = [{"silo_id": silo, "signing_key": encode_public_key(generate_signing_key())} for silo in ("north", "south")]
FEATURES: list[dict[str, Any]] = [
    {"name": "age", "transform": "standardize"},
    {"name": "sex", "transform": "identity"},
    {"name": "cp", "transform": "one_hot", "categories": ["2", "3", "4"]},
    {"name": "chol", "transform": "standardize"},
]
POLICY: dict[str, Any] = {"features": {"age": {"transforms": ["standardize"], "bounds": [0, 100]},
                       "sex": {"transforms": ["identity"], "bounds": [0, 1], "impute": 1},
                       "cp": {"transforms": ["one_hot"], "categories": ["1", "2", "3", "4"]},
                       "chol": {"transforms": ["standardize"], "bounds": [100, 600]}},
          "label": "num"}
DECLARED = {"north": {"epsilon_spent": 1.25, "epsilon_remaining": 8.75, "delta": 1e-5},
            "south": {"epsilon_spent": 1.5, "epsilon_remaining": 3.5, "delta": 1e-5}}
EVALUATION = {"per_silo": {"north": {"loss": 0.5, "accuracy": 0.8, "auc": 0.85, "num_examples": 30},
                           "south": {"loss": 0.6, "accuracy": 0.7, "auc": 0.75, "num_examples": 10}},
              "aggregate": {"loss": 0.525, "accuracy": 0.775, "auc": 0.825, "num_examples": 40}}


def make_plan(dp: bool, features: list[dict[str, Any]] = FEATURES, **extra: Any) -> Plan:
    return Plan.model_validate({**extra,
        "name": "heart-lr", "dataset": "heart", "purpose": "Research on cardiac risk.",
        "model": {"id": "logistic_regression"}, "features": features,
        "label": {"name": "num", "positive_values": ["1"]},
        "client_optimizer": {"name": "sgd", "learning_rate": 0.1}, "local_epochs": 1, "batch_size": 4,
        "rounds": 3, "min_silos_per_round": 2,
        "dp": {"target_epsilon": 3.0, "target_delta": 1e-5} if dp else None,
        "secure_aggregation": {"protocol": "secagg", "threshold": 2}, "cohort": COHORT,
    })


def records() -> pd.DataFrame:
    """Eight records as the silo stores them (categories as text), with a missing age and
    chol in the test split and a category outside the plan's list."""
    return pd.DataFrame({
        "age": [40.0, 55.0, 63.0, 70.0, 48.0, np.nan, 59.0, 35.0],
        "sex": [1.0, 0.0, 1.0, 1.0, np.nan, 0.0, 1.0, 0.0],
        "cp": ["2", "4", "3", "1", "2", "4", None, "3"],
        "chol": [210.0, 250.0, 300.0, 180.0, 199.0, 260.0, np.nan, 700.0],
        "num": ["0", "1", "1", "0", "0", "1", "0", "1"],
        SPLIT_COLUMN: ["train"] * 5 + ["test"] * 3,
    })


def split_csvs(tmp_path: Path) -> tuple[Path, Path]:
    """The same records as a hospital's exports: training records and records to score (no
    label, no split column; categories as the numbers an export writes)."""
    frame = records().drop(columns=[SPLIT_COLUMN, "num"])
    frame["cp"] = pd.to_numeric(frame["cp"])
    train, score = tmp_path / "train.csv", tmp_path / "score.csv"
    frame.iloc[:5].to_csv(train, index=False)
    frame.iloc[5:].to_csv(score, index=False)
    return train, score


# -- the card ---------------------------------------------------------------------------


@pytest.mark.parametrize("dp", [False, True])
def test_card_columns_are_the_silo_views_columns(dp: bool) -> None:
    plan = make_plan(dp)
    view = tabular_view("heart", records(), plan, "train", DatasetPolicy.from_document(POLICY))
    card = build_card(plan, rounds_completed=3, evaluation=EVALUATION, dp_declarations=DECLARED if dp else {})
    assert tuple(card["input"]["columns"]) == view.columns == ("age", "sex", "cp=2", "cp=3", "cp=4", "chol")
    assert tuple(input_columns(plan)) == view.columns
    assert card["input"]["width"] == plan.input_width == view.features.shape[1]
    assert [(f["name"], f["width"], f["first_column"]) for f in card["features"]] == \
        [("age", 1, 0), ("sex", 1, 1), ("cp", 3, 2), ("chol", 1, 5)]


def test_card_contents_from_a_real_plan(tmp_path: Path) -> None:
    plan = make_plan(dp=True)
    card = build_card(plan, rounds_completed=3, evaluation=EVALUATION, dp_declarations=DECLARED)
    assert card["plan"]["name"] == "heart-lr" and card["plan"]["hash"] == plan.plan_hash
    assert card["plan"]["purpose"] == "Research on cardiac risk." and card["rounds_completed"] == 3
    assert card["cohort"] == [{"silo_id": m["silo_id"], "signing_key_fingerprint": fingerprint(m["signing_key"])}
                              for m in COHORT]
    assert card["privacy"]["declared_per_hospital"] == DECLARED and card["privacy"]["target_epsilon"] == 3.0
    # The silos release no positive rate: the baseline is stated as unknown, not invented.
    assert card["evaluation"]["aggregate"]["accuracy"] == 0.775
    assert card["evaluation"]["all_negative_baseline_accuracy"] is None
    assert card["evaluation"]["baseline_note"] == BASELINE_UNKNOWN
    age = card["features"][0]
    assert "public `bounds`" in age["preprocessing"] and "[-1, 1]" in age["preprocessing"]
    plain = build_card(make_plan(dp=False), rounds_completed=3, evaluation=EVALUATION, dp_declarations={})
    assert plain["privacy"] == {"differential_privacy": False}
    assert "own training records" in plain["features"][0]["preprocessing"]
    assert "aggregator never sees" in plain["features"][0]["preprocessing"]

    write_card(tmp_path, card)
    assert json.loads((tmp_path / CARD_FILE).read_text()) == json.loads(json.dumps(card))
    markdown = (tmp_path / CARD_MARKDOWN).read_text()
    assert plan.plan_hash in markdown and "`cp=2`" in markdown and "baseline needs the positive rate" in markdown
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_baseline_is_computed_when_the_silos_release_the_positive_rate() -> None:
    evaluation = {"per_silo": {"north": {"accuracy": 0.8, "positive_rate": 0.2, "num_examples": 30},
                               "south": {"accuracy": 0.7, "positive_rate": 0.4, "num_examples": 10}},
                  "aggregate": {"accuracy": 0.775, "num_examples": 40}}
    card = build_card(make_plan(dp=False), rounds_completed=3, evaluation=evaluation, dp_declarations={})
    assert card["evaluation"]["positive_rate"] == pytest.approx(0.25)
    assert card["evaluation"]["all_negative_baseline_accuracy"] == pytest.approx(0.75)


# -- the card's preprocessing reproduces the silo's view -------------------------------------


def test_preprocess_without_dp_uses_the_hospitals_training_records(tmp_path: Path) -> None:
    for features in (FEATURES, [{**f, "standardize_indicators": True} if f["transform"] == "one_hot" else f
                                for f in FEATURES]):
        plan = make_plan(dp=False, features=features)
        view = tabular_view("heart", records(), plan, "test")
        card = build_card(plan, rounds_completed=3, evaluation={}, dp_declarations={})
        train_csv, score_csv = split_csvs(tmp_path)
        scored = preprocess(card, pd.read_csv(score_csv), train=pd.read_csv(train_csv))
        np.testing.assert_allclose(scored, view.features, atol=1e-6)


def test_preprocess_under_dp_uses_the_policys_public_bounds(tmp_path: Path) -> None:
    plan = make_plan(dp=True)
    view = tabular_view("heart", records(), plan, "test", DatasetPolicy.from_document(POLICY))
    card = build_card(plan, rounds_completed=3, evaluation={}, dp_declarations=DECLARED)
    _, score_csv = split_csvs(tmp_path)
    public = {"age": PublicBounds((0.0, 100.0), None), "sex": PublicBounds((0.0, 1.0), 1.0),
              "chol": PublicBounds((100.0, 600.0), None)}
    scored = preprocess(card, pd.read_csv(score_csv), public=public)
    np.testing.assert_allclose(scored, view.features, atol=1e-6)
    assert scored[2, 5] == 1.0  # chol 700 clamped to the public high bound


def test_preprocess_of_a_non_dp_public_bounds_model_uses_the_policys_public_bounds(tmp_path: Path) -> None:
    """The card says which scaling the hospitals used, not only whether DP was on: a non-DP
    plan with `preprocessing: public_bounds` is scored with the policy's bounds, and the
    training records are not asked for."""
    plan = make_plan(dp=False, preprocessing="public_bounds")
    view = tabular_view("heart", records(), plan, "test", DatasetPolicy.from_document(POLICY))
    card = build_card(plan, rounds_completed=3, evaluation={}, dp_declarations={})
    assert card["input"]["preprocessing"] == "public_bounds" and not card["privacy"]["differential_privacy"]
    assert card["features"][0]["statistics"] == "public bounds from each hospital's dataset policy"
    _, score_csv = split_csvs(tmp_path)
    public = {"age": PublicBounds((0.0, 100.0), None), "sex": PublicBounds((0.0, 1.0), 1.0),
              "chol": PublicBounds((100.0, 600.0), None)}
    scored = preprocess(card, pd.read_csv(score_csv), public=public)
    np.testing.assert_allclose(scored, view.features, atol=1e-6)
    assert build_card(make_plan(dp=False), rounds_completed=3, evaluation={},
                      dp_declarations={})["input"]["preprocessing"] == "train_statistics"


# -- `aggregator predict`: coded refusals (no TensorFlow) ------------------------------------


def exported_card(tmp_path: Path, dp: bool) -> Path:
    model_dir = tmp_path / "model"
    write_card(model_dir, build_card(make_plan(dp), rounds_completed=3, evaluation=EVALUATION,
                                     dp_declarations=DECLARED if dp else {}))
    return model_dir


def refusal(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and captured.out == ""
    return captured.err


def test_predict_names_a_missing_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model_dir = exported_card(tmp_path, dp=False)
    train_csv, score_csv = split_csvs(tmp_path)
    pd.read_csv(score_csv).drop(columns=["chol"]).to_csv(score_csv, index=False)
    err = refusal(capsys, ["predict", "--model", str(model_dir), "--csv", str(score_csv), "--out",
                           str(tmp_path / "scores.csv"), "--stats-from-train", str(train_csv)])
    assert "[PREDICT_COLUMN_MISSING]" in err and "'chol'" in err
    assert not (tmp_path / "scores.csv").exists()


def test_predict_without_dp_needs_the_hospitals_training_records(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    model_dir = exported_card(tmp_path, dp=False)
    _, score_csv = split_csvs(tmp_path)
    err = refusal(capsys, ["predict", "--model", str(model_dir), "--csv", str(score_csv), "--out",
                           str(tmp_path / "scores.csv")])
    assert "[PREDICT_NEEDS_TRAIN_STATS]" in err and "--stats-from-train" in err and "'age'" in err


def test_predict_under_dp_needs_the_public_bounds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model_dir = exported_card(tmp_path, dp=True)
    _, score_csv = split_csvs(tmp_path)
    policy = tmp_path / "policy.yaml"
    policy.write_text(json.dumps({**POLICY, "features": {**POLICY["features"], "chol": {"transforms": ["standardize"]}}}))
    err = refusal(capsys, ["predict", "--model", str(model_dir), "--csv", str(score_csv), "--out",
                           str(tmp_path / "scores.csv"), "--policy", str(policy)])
    assert "[PREDICT_NEEDS_BOUNDS]" in err and "'chol'" in err


def test_predict_refuses_a_folder_without_a_card(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, score_csv = split_csvs(tmp_path)
    err = refusal(capsys, ["predict", "--model", str(tmp_path), "--csv", str(score_csv), "--out",
                           str(tmp_path / "scores.csv")])
    assert "[PREDICT_CARD_INVALID]" in err and CARD_FILE in err
    err = refusal(capsys, ["predict", "--model", str(exported_card(tmp_path, dp=False)), "--csv",
                           str(tmp_path / "absent.csv"), "--out", str(tmp_path / "scores.csv")])
    assert "[MALFORMED_INPUT]" in err and "absent.csv" in err


# -- `aggregator predict` end to end on a real SavedModel ------------------------------------


def test_predict_scores_as_the_model_does_on_hand_preprocessed_inputs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from healthfed_common.learning_process import build_keras_model

    plan = make_plan(dp=False)
    model = build_keras_model(plan)
    kernel = np.array([[0.8], [-0.5], [0.3], [1.1], [-0.7], [0.6]], dtype=np.float32)
    model.set_weights([kernel, np.array([-0.2], dtype=np.float32)])
    model_dir = tmp_path / "model"
    model.save(model_dir / "saved_model", save_format="tf")
    write_card(model_dir, build_card(plan, rounds_completed=3, evaluation=EVALUATION, dp_declarations={}))
    train_csv, score_csv = split_csvs(tmp_path)
    train, score = pd.read_csv(train_csv), pd.read_csv(score_csv)

    # By hand: train mean and sample std, a missing number -> train mean, one-hot by category.
    def standardized(name: str) -> np.ndarray:
        reference = train[name].dropna().to_numpy()
        values = score[name].fillna(reference.mean()).to_numpy()
        return (values - reference.mean()) / reference.std(ddof=1)

    cp = score["cp"].to_numpy()
    hand = np.column_stack([standardized("age"), score["sex"].to_numpy(), cp == 2, cp == 3, cp == 4,
                            standardized("chol")]).astype(np.float32)
    expected = model.predict(hand, verbose=0).reshape(-1)

    out = tmp_path / "scores.csv"
    assert main(["predict", "--model", str(model_dir), "--csv", str(score_csv), "--out", str(out),
                 "--stats-from-train", str(train_csv)]) == 0
    assert "scored 3 rows" in capsys.readouterr().out
    scores = pd.read_csv(out)
    assert list(scores.columns) == ["probability"] and len(scores) == 3
    np.testing.assert_allclose(scores["probability"].to_numpy(), expected, rtol=1e-6, atol=1e-7)
    assert len(set(np.round(expected, 6))) == 3  # the rows really differ: the check can fail


def test_the_coordinators_export_writes_the_card_beside_the_saved_model(tmp_path: Path) -> None:
    """The real Coordinator (real TFF computations, task board and state store): its export is
    what `aggregator run` writes to OUT/model, and the card there must describe that model."""
    from aggregator.coordinator import Coordinator
    from aggregator.state_store import open_state_store
    from aggregator.task_board import TaskBoard

    plan = make_plan(dp=True)
    with open_state_store(tmp_path / "state.sqlite") as store:
        coordinator = Coordinator(plan, TaskBoard(), store, frozenset(plan.cohort_ids), progress=lambda _: None)
        coordinator.report.rounds_completed = 3
        coordinator.report.evaluation = EVALUATION
        coordinator.report.dp_declarations = {s: dict(d) for s, d in DECLARED.items()}
        path = coordinator._export(coordinator.computations.initialize(), tmp_path / "model")
    assert path == tmp_path / "model" / "saved_model" and (path / "saved_model.pb").is_file()
    card = json.loads((tmp_path / "model" / CARD_FILE).read_text())
    assert card["plan"]["hash"] == plan.plan_hash and card["rounds_completed"] == 3
    assert card["privacy"]["declared_per_hospital"] == DECLARED
    assert card["input"]["columns"] == ["age", "sex", "cp=2", "cp=3", "cp=4", "chol"]
    assert (tmp_path / "model" / CARD_MARKDOWN).is_file()
