"""Plans: canonical hashing, strict validation, a closed model registry."""

from __future__ import annotations

import json

import pytest

from healthfed_common.errors import PlanInvalid, UnknownModel
from healthfed_common.models import model_entry
from healthfed_common.plan import parse_plan
from pipelines.demo import demo_plan


def test_plan_hash_ignores_key_order_and_whitespace() -> None:
    document = demo_plan()
    shuffled = json.dumps(dict(reversed(list(document.items()))), indent=4)
    assert parse_plan(document).plan_hash == parse_plan(shuffled).plan_hash


def test_plan_hash_changes_with_any_setting() -> None:
    changed = demo_plan() | {"local_epochs": 3}
    assert parse_plan(demo_plan()).plan_hash != parse_plan(changed).plan_hash


def test_unknown_keys_are_refused_with_their_location() -> None:
    with pytest.raises(PlanInvalid, match="model.path"):
        parse_plan(demo_plan() | {"model": {"id": "mlp", "path": "evil.module.Class"}})


def test_one_hot_feature_needs_categories() -> None:
    bad = demo_plan()
    bad["features"] = [{"name": "sex", "transform": "one_hot"}]
    with pytest.raises(PlanInvalid, match="categories"):
        parse_plan(bad)


def test_label_cannot_also_be_a_feature() -> None:
    bad = demo_plan()
    bad["features"] = bad["features"] + [{"name": bad["label"]["name"]}]
    with pytest.raises(PlanInvalid, match="also listed"):
        parse_plan(bad)


def test_models_come_only_from_the_registry() -> None:
    assert model_entry("mlp").kind == "tabular"
    with pytest.raises(UnknownModel, match="not in this build's registry"):
        model_entry("keras.applications.ResNet50")


def test_zero_initialised_logistic_regression_starts_at_the_uninformative_model() -> None:
    document = demo_plan() | {"model": {"id": "logistic_regression", "kernel_initializer": "zeros"}}
    plan = parse_plan(json.dumps(document))
    model = model_entry("logistic_regression").build(plan.model, (plan.input_width,), 7)
    for weights in model.get_weights():
        assert not weights.any()


def test_zero_initialisation_is_refused_for_models_with_hidden_units() -> None:
    document = demo_plan() | {"model": {"id": "mlp", "hidden_units": [8], "kernel_initializer": "zeros"}}
    with pytest.raises(PlanInvalid, match="kernel_initializer zeros is only for logistic_regression"):
        parse_plan(json.dumps(document))
